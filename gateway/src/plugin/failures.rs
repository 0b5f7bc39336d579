//! Recent plugin failures, per replica: a bounded ring per plugin name that
//! `GET /v1/admin/plugins/{name}/failures` (and `gateway plugin logs`) reads, and the reason
//! text the `plugin_failed` log line carries.
//!
//! A failure's `detail` may be plugin-controlled text (a trap message, a panic, a `failed`
//! answer): it is cut to [`DETAIL_MAX`] characters and its control characters escaped as in
//! `logging`, so neither the log nor the API echoes unbounded or terminal-altering text.
//! Nothing from the request or the tenant's data is kept: the request id, org id, route, the
//! version, the outcome kind, the bounded detail and the grant the host refused.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Failures kept per plugin name.
pub const PER_PLUGIN: usize = 50;
/// Plugin names tracked (the oldest-failing name is forgotten beyond it).
const NAMES: usize = 1024;
/// Characters of a detail kept.
pub const DETAIL_MAX: usize = 512;

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub at: DateTime<Utc>,
    pub request_id: String,
    pub org_id: Uuid,
    /// The route id (or the job's label) the plugin served.
    pub route: String,
    pub version: String,
    /// `trap`, `cpu_deadline`, `wall_timeout`, `memory_exhausted`, `handler_failed`,
    /// `invalid_answer`, `answered_after_failed_statement`, `database`, …
    pub outcome: String,
    /// Why, bounded and escaped (empty when the outcome says it all).
    pub detail: String,
    /// The last grant the host refused during the invocation (`table crm_events (write)`,
    /// `locks`, `host https://api.example.com`), when one was.
    pub not_granted: Option<String>,
}

/// `detail` cut to [`DETAIL_MAX`] characters (marked with `…`) with control characters escaped.
pub fn bound(detail: &str) -> String {
    let mut out = String::with_capacity(detail.len().min(DETAIL_MAX + 8));
    for (i, c) in detail.chars().enumerate() {
        if i == DETAIL_MAX {
            out.push('…');
            break;
        }
        if crate::logging::needs_escape(c) {
            crate::logging::push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Default)]
pub struct Failures {
    by_name: Mutex<HashMap<String, VecDeque<Failure>>>,
}

impl Failures {
    pub fn record(&self, plugin: &str, failure: Failure) {
        let mut map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(plugin) && map.len() >= NAMES {
            let oldest = map
                .iter()
                .min_by_key(|(_, q)| q.back().map(|f| f.at))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        let q = map.entry(plugin.to_string()).or_default();
        if q.len() == PER_PLUGIN {
            q.pop_front();
        }
        q.push_back(failure);
    }

    /// Newest first.
    pub fn recent(&self, plugin: &str) -> Vec<Failure> {
        let map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        map.get(plugin).map(|q| q.iter().rev().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(n: usize) -> Failure {
        Failure {
            at: Utc::now(),
            request_id: format!("r{n}"),
            org_id: Uuid::nil(),
            route: "r".into(),
            version: "1".into(),
            outcome: "trap".into(),
            detail: String::new(),
            not_granted: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_failures_per_plugin() {
        let f = Failures::default();
        for n in 0..PER_PLUGIN + 5 {
            f.record("a", failure(n));
        }
        f.record("b", failure(999));
        let a = f.recent("a");
        assert_eq!(a.len(), PER_PLUGIN);
        assert_eq!(a[0].request_id, format!("r{}", PER_PLUGIN + 4));
        assert_eq!(a.last().unwrap().request_id, "r5");
        assert_eq!(f.recent("b").len(), 1);
        assert!(f.recent("c").is_empty());
    }

    #[test]
    fn details_are_bounded_and_escaped() {
        assert_eq!(bound("boom\n\x1b[31mred"), "boom\\n\\x1b[31mred");
        let long = "x".repeat(DETAIL_MAX * 3);
        let b = bound(&long);
        assert_eq!(b.chars().count(), DETAIL_MAX + 1);
        assert!(b.ends_with('…'));
    }
}
