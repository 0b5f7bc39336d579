//! `echo`: answers with the call's context and the JSON it was sent. The smallest useful
//! plugin, and the one the dispatch benchmarks measure.

use gateway_plugin_sdk::{self as sdk, context, serde_json::json, HandlerError, Request, Response};

struct Echo;

impl sdk::Guest for Echo {
    fn handle(req: Request) -> Result<Response, HandlerError> {
        let ctx = context::get();
        let body = req.json_value()?;
        sdk::json(
            200,
            &json!({
                "org_id": ctx.org_id,
                "user_id": ctx.user_id,
                "role": match ctx.role {
                    context::Role::Member => "member",
                    context::Role::Admin => "admin",
                    context::Role::SuperAdmin => "super_admin",
                },
                "request_id": ctx.request_id,
                "body": body,
            }),
        )
    }
}

sdk::export_plugin!(Echo);
