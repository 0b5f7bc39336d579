//! The scheduler (docs/optimizer.md, "Schedules"): on every replica (`GATEWAY_SCHEDULER`,
//! default on), every second, claims the due slots of every org's schedules (`db::schedules`:
//! platform scope, `SKIP LOCKED`, a slot recorded once by its primary key) and enqueues their
//! `optimizer` jobs, unless a recent run covers them. Also the cron and time-zone rules the
//! schedules API validates with.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use tokio::sync::watch;

use crate::db::schedules::{self, SlotRules};
use crate::state::AppState;

/// How often due schedules are looked for.
pub const TICK: Duration = Duration::from_secs(1);
/// A job of the schedule's kind pending, running, or finished this recently skips a slot.
pub const RECENT_SECS: f64 = 300.0;
/// Slots one tick takes at most (the rest wait a second).
const PER_TICK: usize = 50;
/// The scheduled `optimizer` job's attempts and first retry delay.
const MAX_ATTEMPTS: i32 = 3;
const RETRY_BASE_MS: i32 = 5000;

/// Parses a five-field cron expression (minute hour day-of-month month day-of-week, as
/// `croner` reads them); seconds and years are refused.
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if fields != 5 || text.contains('@') {
        return Err("must be five fields: minute hour day-of-month month day-of-week".into());
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("is not a valid cron expression ({e})"))
}

/// An IANA time zone name (`Europe/Berlin`, `UTC`).
pub fn parse_zone(text: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(text).map_err(|_| "must be an IANA time zone name, e.g. Europe/Berlin or UTC".into())
}

/// The first slot strictly after `after`, in `zone`'s local time.
pub fn next_after(cron: &Cron, zone: chrono_tz::Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after.with_timezone(&zone), false).ok().map(|t| t.with_timezone(&Utc))
}

/// [`next_after`] now, from the stored text (`None`: it no longer parses: the schedule stops).
fn next_from_text(cron: &str, zone: &str) -> Option<DateTime<Utc>> {
    next_after(&parse_cron(cron).ok()?, parse_zone(zone).ok()?, Utc::now())
}

/// The running scheduler of this replica.
pub struct Scheduler {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Scheduler {
    pub fn start(state: Arc<AppState>, replica: String, enabled: bool) -> Option<Scheduler> {
        if !enabled {
            tracing::info!("scheduler disabled (GATEWAY_SCHEDULER=off)");
            return None;
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(state, replica, stopped));
        Some(Scheduler { stop, task })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
        }
    }
}

async fn run(state: Arc<AppState>, replica: String, mut stopped: watch::Receiver<bool>) {
    tracing::info!(replica = %replica, "scheduler started");
    let rules = SlotRules {
        replica: &replica,
        recent_secs: RECENT_SECS,
        max_attempts: MAX_ATTEMPTS,
        retry_base_ms: RETRY_BASE_MS,
        next: &next_from_text,
    };
    loop {
        for _ in 0..PER_TICK {
            match schedules::run_one_due(&state.pool, &rules).await {
                Ok(None) => break,
                Ok(Some(r)) => {
                    tracing::info!(org_id = %r.org, kind = %r.kind, slot = %r.slot, outcome = r.outcome,
                        job_id = ?r.job_id, run_id = ?r.run_id, next_run_at = ?r.next_run_at, "schedule_slot");
                    if r.outcome == "enqueued" {
                        state.jobs_wake.notify_waiters();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error::loggable(&e), "scheduler tick failed");
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stopped.changed() => break,
        }
    }
    tracing::info!("scheduler stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_only_and_slots_follow_the_zone() {
        assert!(parse_cron("*/15 * * * *").is_ok());
        assert!(parse_cron("0 9 * * MON-FRI").is_ok());
        for bad in ["* * * * * *", "0 0 9 * * * 2030", "* * * *", "@hourly", "61 * * * *", ""] {
            assert!(parse_cron(bad).is_err(), "{bad:?}");
        }
        assert!(parse_zone("Europe/Berlin").is_ok() && parse_zone("UTC").is_ok());
        assert!(parse_zone("Mars/Olympus").is_err());
        let cron = parse_cron("0 9 * * *").unwrap();
        let after: DateTime<Utc> = "2026-01-15T10:00:00Z".parse().unwrap();
        // 09:00 in Berlin (UTC+1 in winter) is 08:00 UTC, the next day.
        let next = next_after(&cron, parse_zone("Europe/Berlin").unwrap(), after).unwrap();
        assert_eq!(next, "2026-01-16T08:00:00Z".parse::<DateTime<Utc>>().unwrap());
        // Strictly after: a slot at `after` itself is not the next one.
        let at: DateTime<Utc> = "2026-01-16T08:00:00Z".parse().unwrap();
        assert_eq!(next_after(&cron, parse_zone("Europe/Berlin").unwrap(), at).unwrap(), "2026-01-17T08:00:00Z".parse::<DateTime<Utc>>().unwrap());
    }
}
