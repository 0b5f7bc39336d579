//! `echo`: answers with the call's context and the JSON it was sent. The smallest useful
//! plugin, and the one the dispatch benchmarks measure.
//!
//! The body is checked to be JSON but not built into a tree: it is echoed as sent, inside an
//! object written directly (the context's strings escaped by serde_json), so the plugin's own
//! work stays small next to the cost of dispatching it.

use gateway_plugin_sdk::{self as sdk, context, serde_json, HandlerError, Request, Response};

struct Echo;

impl sdk::Guest for Echo {
    fn handle(req: Request) -> Result<Response, HandlerError> {
        let ctx = context::get();
        let body = &req.body[..];
        if !body.is_empty() {
            serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|e| sdk::invalid(&format!("body is not JSON: {e}")))?;
        }
        let role = match ctx.role {
            context::Role::Member => "member",
            context::Role::Admin => "admin",
            context::Role::SuperAdmin => "super_admin",
        };
        let mut out = Vec::with_capacity(body.len() + 192);
        let text = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(out, s).expect("a string serializes");
        out.extend_from_slice(b"{\"org_id\":");
        text(&mut out, &ctx.org_id);
        out.extend_from_slice(b",\"user_id\":");
        match &ctx.user_id {
            Some(u) => text(&mut out, u),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"role\":");
        text(&mut out, role);
        out.extend_from_slice(b",\"request_id\":");
        text(&mut out, &ctx.request_id);
        out.extend_from_slice(b",\"body\":");
        out.extend_from_slice(if body.is_empty() { b"null" } else { body });
        out.push(b'}');
        Ok(Response { status: 200, headers: vec![sdk::Header { name: "content-type".into(), value: "application/json".into() }], body: out })
    }
}

sdk::export_plugin!(Echo);
