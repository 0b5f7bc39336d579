//! Webhook adapters: a provider's events, run through the internal plugin route its policy
//! names (`[providers.<name>].route`), in the event's org, in one transaction that also
//! records the job's attempt.

use std::sync::Arc;

use crate::db::jobs::{self, Attempt, Claimed, EventData};
use crate::plugin::bindings::types::{Header, Request};
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
    // The provider's fail-soft chain (docs/optimizer.md): after a 2xx for a fresh reply, one
    // job per step, in this transaction, after the adapter's own (critical) writes.
    let chain = state.routing().policies.providers.get(&event.provider).map(|p| p.chain.clone()).unwrap_or_default();
    let event_id = event.id;
    let before_commit: crate::plugin::BeforeCommit<'static> = Box::new(move |tx, answer| {
        let steps = match (200..=299).contains(&answer.status) && !chain.is_empty() {
            true => crate::chain::ChainEvent::from_adapter_answer(&answer.body, event_id),
            false => None,
        };
        Box::pin(async move {
            let ours = !jobs::finish_on(tx, &worker, std::slice::from_ref(&done)).await?.is_empty();
            flag.store(ours, std::sync::atomic::Ordering::Relaxed);
            if let (true, Some(ev)) = (ours, steps) {
                crate::chain::enqueue(tx, &chain, &ev, Some(event_id)).await?;
            }
            Ok(ours)
        })
    });
    let (plugin, outcome) =
        crate::jobs::invoke_adapter(state, pool, &event.provider, job.tenant_id, &request_id, request, before_commit).await?;
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
