//! The native handlers a policy may name (`target = "native:<name>"`), resolved when policies
//! load: a route holds a [`Native`], never a string, and `native::call` matches on it
//! exhaustively, so the list and the dispatcher cannot drift apart.

/// Declares [`Native`] and its names in one list.
macro_rules! native_handlers {
    ($($variant:ident = $name:literal,)*) => {
        /// A handler compiled into the gateway.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Native {
            $($variant,)*
        }

        impl Native {
            /// Every handler, in declaration order.
            pub const ALL: &'static [Native] = &[$(Native::$variant,)*];

            /// The name policies use.
            pub fn name(self) -> &'static str {
                match self {
                    $(Native::$variant => $name,)*
                }
            }

            pub fn parse(name: &str) -> Option<Native> {
                match name {
                    $($name => Some(Native::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

native_handlers! {
    Whoami = "whoami",
    CreateOrg = "create_org",
    UpdateOrg = "update_org",
    CreateToken = "create_token",
    RevokeToken = "revoke_token",
    CreateBusiness = "create_business",
    AddBusinessMember = "add_business_member",
    UploadPlugin = "upload_plugin",
    ActivatePlugin = "activate_plugin",
    RollbackPlugin = "rollback_plugin",
    ListPlugins = "list_plugins",
    PluginFailures = "plugin_failures",
    DeactivatePlugin = "deactivate_plugin",
    CreateWebhookEndpoint = "create_webhook_endpoint",
    ListWebhookEndpoints = "list_webhook_endpoints",
    RotateWebhookEndpoint = "rotate_webhook_endpoint",
    DisableWebhookEndpoint = "disable_webhook_endpoint",
    WebhookIngress = "webhook_ingress",
    ListWebhookEvents = "list_webhook_events",
    GetWebhookEvent = "get_webhook_event",
    ReplayWebhookEvent = "replay_webhook_event",
    ListInboxes = "list_inboxes",
    CreateCampaign = "create_campaign",
    ListCampaigns = "list_campaigns",
    GetCampaign = "get_campaign",
    SetCampaignStatus = "set_campaign_status",
    GetCampaignSequence = "get_campaign_sequence",
    SaveCampaignSequence = "save_campaign_sequence",
    AddCampaignLeads = "add_campaign_leads",
    ListCampaignLeads = "list_campaign_leads",
    CampaignLeadAction = "campaign_lead_action",
    ListCampaignReplies = "list_campaign_replies",
    ListLeadMessages = "list_lead_messages",
    CampaignAnalytics = "campaign_analytics",
    SetCapability = "set_capability",
    ListCapabilities = "list_capabilities",
    StartProvisioning = "start_provisioning",
    GetProvisioning = "get_provisioning",
    PutProvider = "put_provider",
    GetProvider = "get_provider",
    ListProviders = "list_providers",
    DeleteProvider = "delete_provider",
    ListOptimizations = "list_optimizations",
    GetOptimization = "get_optimization",
    ApproveOptimization = "approve_optimization",
    RejectOptimization = "reject_optimization",
    RollbackOptimization = "rollback_optimization",
    RunOptimizer = "run_optimizer",
    OpenApi = "openapi",
    Console = "console",
    GetSettings = "get_settings",
    PutSettings = "put_settings",
    GetSchedule = "get_schedule",
    PutSchedule = "put_schedule",
    DeleteSchedule = "delete_schedule",
    ListAgentRuns = "list_agent_runs",
}

/// Every name, for messages.
pub fn names() -> String {
    Native::ALL.iter().map(|n| n.name()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in Native::ALL {
            assert_eq!(Native::parse(n.name()), Some(*n));
        }
        assert_eq!(Native::parse("nope"), None);
    }
}
