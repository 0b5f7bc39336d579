//! `provider-stub`: a stand-in provider adapter for the tests of the `provider_sync` runner
//! (`tests/integration/campaigns.rs`). It reaches no provider. It answers by the last path
//! segment of the job's `base_url`, which the test configures for the org:
//!
//! - `ok`: 200; `create_campaign` first writes the campaign's `provider_id`
//!   (`stub-<campaign_id>`) and `sync_status = 'synced'`, as a real adapter does;
//! - `rate-limited`: 429 with `retry-after: 2`;
//! - anything else: 503 with `error_code` `STUB_DOWN`.
//!
//! Each call is logged (`provider_stub_called`): the op, the job headers, the body's keys
//! and the webhook URL without its secret (only the secret's length).

use gateway_plugin_sdk::db::{self, Filtered, Value};
use gateway_plugin_sdk::serde_json::{json, Value as J};
use gateway_plugin_sdk::{self as sdk, HandlerError, Header, Request, Response};

struct Stub;

impl sdk::Guest for Stub {
    fn handle(req: Request) -> Result<Response, HandlerError> {
        let body = req.json_value()?;
        let op = req.path.strip_prefix("/provider/").unwrap_or_default().to_string();
        let mode = body.get("base_url").and_then(J::as_str).and_then(|u| u.rsplit('/').next()).unwrap_or_default().to_string();
        let mut keys: Vec<&str> = body.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        keys.sort_unstable();
        let hook = body.get("webhook_url").and_then(J::as_str).unwrap_or_default();
        let (hook_path, secret) = hook.split_once("?secret=").unwrap_or((hook, ""));
        let h = |name: &str| req.header(name).unwrap_or_default().to_string();
        sdk::log::info(
            "provider_stub_called",
            &[
                ("op", &op),
                ("mode", &mode),
                ("job_id", &h("x-job-id")),
                ("attempt", &h("x-job-attempt")),
                ("max_attempts", &h("x-job-max-attempts")),
                ("content_type", &h("content-type")),
                ("keys", &keys.join(",")),
                ("webhook_url", hook_path),
                ("secret_len", &secret.len().to_string()),
            ],
        );
        match mode.as_str() {
            "ok" => {}
            "rate-limited" => {
                return Ok(Response { status: 429, headers: vec![Header { name: "retry-after".into(), value: "2".into() }], body: vec![] })
            }
            _ => return sdk::json(503, &json!({ "error_code": "STUB_DOWN" })),
        }
        if let ("create_campaign", Some(id)) = (op.as_str(), body.get("campaign_id").and_then(J::as_str)) {
            db::update("campaigns")
                .set("provider_id", Value::text(&format!("stub-{id}")))
                .set("sync_status", Value::text("synced"))
                .eq("id", Value::uuid(id))
                .execute()?;
        }
        sdk::json(200, &json!({ "ok": true }))
    }
}

sdk::export_plugin!(Stub);
