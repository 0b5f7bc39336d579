//! Webhook adapters: a provider's events, run through the internal plugin route its policy
//! names (`[providers.<name>].route`), in the event's org, in one transaction that also
//! records the job's attempt.

use std::sync::Arc;

use crate::db::jobs::{self, Attempt, Claimed, EventData};
use crate::plugin::bindings::types::{Header, Request};
use crate::policy::Target;
use crate::role::Role;
use crate::state::AppState;

/// Runs the provider's adapter plugin on the event; `Ok(true)` when the attempt was recorded
/// in the adapter's own transaction. The error text is stored as the job's `last_error`
/// (never logged: it may quote the payload).
pub async fn run(
    state: &AppState,
    pool: &sqlx::PgPool,
    worker: &str,
    job: &Claimed,
    event: &EventData,
    done: &Attempt,
) -> Result<bool, String> {
    let routing = state.routing();
    let policies = &routing.policies;
    let provider = policies.providers.get(&event.provider).ok_or_else(|| format!("provider {:?} is not in the policies", event.provider))?;
    let route = policies.route(&provider.route).ok_or_else(|| format!("route {:?} is not in the policies", provider.route))?;
    let Target::Plugin(name) = &route.target else { return Err(format!("route {:?} does not target a plugin", route.id)) };
    let plugin = state.plugin(name).ok_or_else(|| format!("plugin {name:?} is not loaded"))?;
    let mut headers = vec![
        Header { name: "content-type".into(), value: event.content_type.clone().unwrap_or_else(|| "application/json".into()) },
        Header { name: "webhook-event-id".into(), value: event.id.to_string() },
        Header { name: "webhook-event-key".into(), value: event.event_key.clone() },
        Header { name: "x-job-attempt".into(), value: job.attempts.to_string() },
    ];
    if let Some(t) = &event.event_type {
        headers.push(Header { name: "webhook-event-type".into(), value: t.clone() });
    }
    let request = Request {
        method: "POST".into(),
        path: format!("/webhooks/{}", event.provider),
        params: vec![],
        query: String::new(),
        headers,
        body: event.body.clone(),
    };
    let request_id = done.run_id.simple().to_string();
    let recorded = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, done) = (recorded.clone(), done.clone());
    let worker = worker.to_string();
    let before_commit: crate::plugin::BeforeCommit<'_> = Box::new(move |tx, _answer| {
        Box::pin(async move {
            let ours = !jobs::finish_on(tx, &worker, std::slice::from_ref(&done)).await?.is_empty();
            flag.store(ours, std::sync::atomic::Ordering::Relaxed);
            Ok(ours)
        })
    });
    let started = std::time::Instant::now();
    let outcome = state
        .runtime
        .invoke(
            &plugin,
            crate::plugin::Invocation {
                label: &route.id,
                grants: route.grants.clone(),
                sandbox: route.sandbox,
                pool,
                schema: state.schema.clone(),
                org: job.tenant_id,
                user: None,
                role: Role::Member,
                request_id: &request_id,
                request,
                before_commit: Some(before_commit),
                credentials: Some(state.providers.clone()),
            },
        )
        .await;
    state.metrics.plugin_invocation(&plugin.name, &plugin.version, outcome.kind(), started.elapsed());
    if !matches!(outcome, crate::plugin::Outcome::Response(_)) {
        state.console.hourly.plugin_failed(job.tenant_id);
    }
    match crate::phases::dispatch::plugin_reply(&plugin.version, outcome) {
        Ok(reply) if reply.status.is_success() => Ok(recorded.load(std::sync::atomic::Ordering::Relaxed)),
        Ok(reply) => Err(format!("{} answered {}", plugin.name, reply.status.as_u16())),
        Err(e) => {
            let mut msg = format!("{}: {}", e.code_str(), e.message);
            msg.truncate(msg.floor_char_boundary(500));
            Err(msg)
        }
    }
}
