-- Provider adapters (issue: provider adapters; seed 002): per-org provider credentials
-- (usable by adapter plugins, never readable by them), capabilities and their provisioning,
-- and the local campaign state that is the source of truth for the campaigns API.

-- Closed to `gateway_app` (no privilege at all, so no plugin grant and no tenant transaction
-- can reach them), yet tenant-scoped like every tenant table: RLS forced, read by the owner
-- role in a transaction that sets the org. The host reads them to inject a credential into
-- an adapter's outgoing request.
CREATE TABLE provider_configs (
    tenant_id   uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    provider    text NOT NULL CONSTRAINT provider_configs_provider_len CHECK (length(provider) BETWEEN 1 AND 64),
    -- Where the adapter's calls go: its origin is the only one the credential is injected for.
    base_url    text NOT NULL CONSTRAINT provider_configs_base_url_len CHECK (length(base_url) BETWEEN 1 AND 2048),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT provider_configs_pkey PRIMARY KEY (tenant_id, provider)
);

-- One sealed secret per (org, provider, name): AES-256-GCM under the gateway's secret key,
-- bound to org, provider and name. `name` is a credential's name (`api_key`) or
-- `webhook_secret`.
CREATE TABLE provider_secrets (
    tenant_id   uuid NOT NULL,
    provider    text NOT NULL,
    name        text NOT NULL CONSTRAINT provider_secrets_name_valid CHECK (name ~ '^[a-z][a-z0-9_]{0,63}$'),
    sealed      bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT provider_secrets_pkey PRIMARY KEY (tenant_id, provider, name),
    CONSTRAINT provider_secrets_config_fkey FOREIGN KEY (tenant_id, provider)
        REFERENCES provider_configs (tenant_id, provider) ON DELETE CASCADE
);

-- Tenant tables from here on.

-- Which provider serves a capability for an org (set by a super-admin only: no tenant route
-- writes it).
CREATE TABLE org_capabilities (
    tenant_id   uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    capability  text NOT NULL CONSTRAINT org_capabilities_capability_valid
                CHECK (capability IN ('email_outreach', 'linkedin_outreach')),
    provider    text NOT NULL CONSTRAINT org_capabilities_provider_len CHECK (length(provider) BETWEEN 1 AND 64),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT org_capabilities_pkey PRIMARY KEY (tenant_id, capability)
);

-- Explicit provisioning of a capability (never triggered by login): the job checks the
-- credential, registers the org's webhook endpoint at the provider and syncs inboxes.
CREATE TABLE provisioning (
    tenant_id            uuid NOT NULL,
    capability           text NOT NULL,
    provider             text NOT NULL,
    status               text NOT NULL CONSTRAINT provisioning_status_valid
                         CHECK (status IN ('pending', 'ready', 'failed')),
    reason               text CONSTRAINT provisioning_reason_len CHECK (reason IS NULL OR length(reason) <= 500),
    job_id               uuid,
    webhook_endpoint_id  uuid,
    provider_webhook_id  text CONSTRAINT provisioning_provider_webhook_id_len CHECK (provider_webhook_id IS NULL OR length(provider_webhook_id) <= 200),
    requested_at         timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT provisioning_pkey PRIMARY KEY (tenant_id, capability),
    CONSTRAINT provisioning_capability_fkey FOREIGN KEY (tenant_id, capability)
        REFERENCES org_capabilities (tenant_id, capability) ON DELETE CASCADE
);

-- Sending accounts at the provider (Smartlead email accounts, HeyReach LinkedIn senders).
CREATE TABLE inboxes (
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    provider     text NOT NULL,
    provider_id  text NOT NULL CONSTRAINT inboxes_provider_id_len CHECK (length(provider_id) BETWEEN 1 AND 200),
    address      text CONSTRAINT inboxes_address_len CHECK (address IS NULL OR length(address) <= 320),
    name         text CONSTRAINT inboxes_name_len CHECK (name IS NULL OR length(name) <= 200),
    status       text CONSTRAINT inboxes_status_len CHECK (status IS NULL OR length(status) <= 64),
    synced_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inboxes_pkey PRIMARY KEY (id),
    CONSTRAINT inboxes_tenant_provider_id_key UNIQUE (tenant_id, provider, provider_id)
);

CREATE TABLE campaigns (
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name              text NOT NULL CONSTRAINT campaigns_name_len CHECK (length(name) BETWEEN 1 AND 200),
    channel           text NOT NULL CONSTRAINT campaigns_channel_valid CHECK (channel IN ('email', 'linkedin')),
    provider          text NOT NULL,
    provider_id       text CONSTRAINT campaigns_provider_id_len CHECK (provider_id IS NULL OR length(provider_id) <= 200),
    status            text NOT NULL DEFAULT 'draft' CONSTRAINT campaigns_status_valid
                      CHECK (status IN ('draft', 'active', 'paused', 'stopped', 'completed')),
    sync_status       text NOT NULL DEFAULT 'pending' CONSTRAINT campaigns_sync_status_valid
                      CHECK (sync_status IN ('pending', 'synced', 'failed')),
    sync_error        text CONSTRAINT campaigns_sync_error_len CHECK (sync_error IS NULL OR length(sync_error) <= 500),
    sequence_version  integer NOT NULL DEFAULT 0,
    created_by        uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaigns_pkey PRIMARY KEY (id),
    CONSTRAINT campaigns_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT campaigns_tenant_provider_id_key UNIQUE (tenant_id, provider, provider_id)
);
CREATE INDEX campaigns_recent ON campaigns (tenant_id, created_at DESC);

-- Versioned snapshots: every save is a new version; `steps` is the whole sequence.
CREATE TABLE campaign_sequences (
    tenant_id    uuid NOT NULL,
    campaign_id  uuid NOT NULL,
    version      integer NOT NULL CONSTRAINT campaign_sequences_version_positive CHECK (version > 0),
    steps        jsonb NOT NULL CONSTRAINT campaign_sequences_steps_array CHECK (jsonb_typeof(steps) = 'array'),
    sync_status  text NOT NULL DEFAULT 'pending' CONSTRAINT campaign_sequences_sync_status_valid
                 CHECK (sync_status IN ('pending', 'synced', 'failed')),
    sync_error   text CONSTRAINT campaign_sequences_sync_error_len CHECK (sync_error IS NULL OR length(sync_error) <= 500),
    created_by   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaign_sequences_pkey PRIMARY KEY (tenant_id, campaign_id, version),
    CONSTRAINT campaign_sequences_campaign_fkey FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES campaigns (tenant_id, id) ON DELETE CASCADE
);

-- A lead's identity at its provider: the normalised email (email channel) or the LinkedIn
-- profile URL (linkedin channel); a campaign holds each identity once.
CREATE TABLE campaign_leads (
    id             uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL,
    campaign_id    uuid NOT NULL,
    identity       text NOT NULL CONSTRAINT campaign_leads_identity_len CHECK (length(identity) BETWEEN 1 AND 500),
    email          text CONSTRAINT campaign_leads_email_normalised CHECK (email IS NULL OR email = lower(btrim(email))),
    profile_url    text CONSTRAINT campaign_leads_profile_url_len CHECK (profile_url IS NULL OR length(profile_url) <= 500),
    first_name     text CONSTRAINT campaign_leads_first_name_len CHECK (first_name IS NULL OR length(first_name) <= 200),
    last_name      text CONSTRAINT campaign_leads_last_name_len CHECK (last_name IS NULL OR length(last_name) <= 200),
    company        text CONSTRAINT campaign_leads_company_len CHECK (company IS NULL OR length(company) <= 200),
    custom_fields  jsonb NOT NULL DEFAULT '{}' CONSTRAINT campaign_leads_custom_fields_object CHECK (jsonb_typeof(custom_fields) = 'object'),
    status         text NOT NULL DEFAULT 'active' CONSTRAINT campaign_leads_status_valid
                   CHECK (status IN ('active', 'paused', 'unsubscribed', 'bounced', 'replied', 'completed')),
    category       text CONSTRAINT campaign_leads_category_len CHECK (category IS NULL OR length(category) <= 100),
    provider_id    text CONSTRAINT campaign_leads_provider_id_len CHECK (provider_id IS NULL OR length(provider_id) <= 200),
    sync_status    text NOT NULL DEFAULT 'pending' CONSTRAINT campaign_leads_sync_status_valid
                   CHECK (sync_status IN ('pending', 'synced', 'failed')),
    sync_error     text CONSTRAINT campaign_leads_sync_error_len CHECK (sync_error IS NULL OR length(sync_error) <= 500),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaign_leads_pkey PRIMARY KEY (id),
    CONSTRAINT campaign_leads_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT campaign_leads_identity_key UNIQUE (tenant_id, campaign_id, identity),
    CONSTRAINT campaign_leads_campaign_fkey FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES campaigns (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX campaign_leads_provider_id ON campaign_leads (tenant_id, campaign_id, provider_id);

-- Messages sent and received (replies), from provider webhooks; once per event key.
CREATE TABLE campaign_messages (
    id                   uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id            uuid NOT NULL,
    campaign_id          uuid NOT NULL,
    lead_id              uuid,
    direction            text NOT NULL CONSTRAINT campaign_messages_direction_valid CHECK (direction IN ('outbound', 'inbound')),
    seq_number           integer,
    subject              text CONSTRAINT campaign_messages_subject_len CHECK (subject IS NULL OR length(subject) <= 1000),
    body                 text CONSTRAINT campaign_messages_body_len CHECK (body IS NULL OR length(body) <= 100000),
    provider_message_id  text CONSTRAINT campaign_messages_provider_message_id_len CHECK (provider_message_id IS NULL OR length(provider_message_id) <= 500),
    event_key            text NOT NULL CONSTRAINT campaign_messages_event_key_len CHECK (length(event_key) BETWEEN 1 AND 512),
    occurred_at          timestamptz NOT NULL DEFAULT now(),
    created_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaign_messages_pkey PRIMARY KEY (id),
    CONSTRAINT campaign_messages_event_key_key UNIQUE (tenant_id, event_key),
    CONSTRAINT campaign_messages_campaign_fkey FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES campaigns (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT campaign_messages_lead_fkey FOREIGN KEY (tenant_id, lead_id)
        REFERENCES campaign_leads (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX campaign_messages_campaign ON campaign_messages (tenant_id, campaign_id, occurred_at DESC);

-- Normalised provider events, once per (event key, kind): analytics are counted from here.
CREATE TABLE campaign_activity (
    tenant_id    uuid NOT NULL,
    campaign_id  uuid NOT NULL,
    lead_id      uuid,
    seq_number   integer,
    kind         text NOT NULL CONSTRAINT campaign_activity_kind_valid
                 CHECK (kind IN ('reply.received', 'message.sent', 'message.opened', 'link.clicked', 'bounced',
                                 'unsubscribed', 'lead.category_changed', 'connection.accepted',
                                 'campaign.status_changed')),
    event_key    text NOT NULL CONSTRAINT campaign_activity_event_key_len CHECK (length(event_key) BETWEEN 1 AND 512),
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaign_activity_pkey PRIMARY KEY (tenant_id, event_key, kind),
    CONSTRAINT campaign_activity_campaign_fkey FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES campaigns (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX campaign_activity_campaign ON campaign_activity (tenant_id, campaign_id, seq_number);

-- Provider-sync jobs carry what to do (`{"op": ..., ...}`); webhook jobs leave it NULL.
ALTER TABLE jobs ADD COLUMN payload jsonb;

SELECT app_tenant_table('provider_configs');
SELECT app_tenant_table('provider_secrets');
REVOKE ALL ON provider_configs, provider_secrets FROM gateway_app;
SELECT app_tenant_table('org_capabilities');
SELECT app_tenant_table('provisioning');
SELECT app_tenant_table('inboxes');
SELECT app_tenant_table('campaigns');
SELECT app_tenant_table('campaign_sequences');
SELECT app_tenant_table('campaign_leads');
SELECT app_tenant_table('campaign_messages');
SELECT app_tenant_table('campaign_activity');

-- Provider webhook schemes: Smartlead (an `X-Smartlead-Signature` HMAC of the body and/or its
-- `secret_key` field) and a secret token in the registered URL (HeyReach, which does not sign).
ALTER TABLE webhook_endpoints DROP CONSTRAINT webhook_endpoints_scheme_valid;
ALTER TABLE webhook_endpoints ADD CONSTRAINT webhook_endpoints_scheme_valid
    CHECK (scheme IN ('standard-webhooks', 'hmac-sha256', 'smartlead', 'url-token'));
