//! Per-org admission of plugin invocations: how many of an org's invocations may run at once
//! (`plugin_concurrency`) and how much guest CPU it may spend (`plugin_cpu_ms_per_s`, a token
//! bucket refilled continuously, up to one second's worth). Both come from the org's plan.
//!
//! Rate limits count requests; this counts what plugins cost. An org whose plugins spin is
//! refused at the door (429 with `Retry-After`) before it can take the guest runtime from
//! everyone else. The CPU an invocation used is charged after it ends, so one invocation may
//! overdraw the bucket; the next ones are refused until it is positive again. An invocation
//! over the concurrency cap waits up to [`QUEUE_WAIT`] for a slot (a burst queues, sustained
//! overload is refused); waiting costs no CPU.
//!
//! Whatever its plan says (or when its plan sets no cap, or names no plan the policies still
//! declare), one org never holds more than the admission's ceiling of live instances
//! (`GATEWAY_PLUGIN_INSTANCES_PER_ORG`, a fraction of the shared instance pool): the pool
//! belongs to every org, so no single one can fill it.
//!
//! Across replicas each one admits its share of the plan's caps (the cap divided by the live
//! replicas, rounded up; see `ratelimit::fleet`'s heartbeat), so the fleet as a whole stays
//! within the plan when an org's load is spread evenly (docs/scaling.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long an invocation over its org's concurrency cap waits for a slot.
pub const QUEUE_WAIT: Duration = Duration::from_secs(2);

use uuid::Uuid;

/// An org's plugin limits, from its plan; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginLimits {
    pub concurrency: Option<u32>,
    pub cpu_ms_per_s: Option<u32>,
}

/// Why an invocation was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The org already runs its plan's number of invocations.
    Concurrency,
    /// The org's CPU bucket is empty; it refills in `retry_after`.
    Cpu { retry_after: Duration },
}

#[derive(Debug)]
struct OrgUse {
    /// The cap the semaphore was made for, and the semaphore.
    slots: Option<(u32, Arc<Semaphore>)>,
    running: u32,
    /// Milliseconds of CPU the org may still start spending (may go negative).
    tokens: f64,
    refilled: Instant,
}

pub struct Admission {
    orgs: Mutex<HashMap<Uuid, OrgUse>>,
    /// Live replicas: each admits its share of a plan's caps (the caps hold across the fleet).
    share: AtomicU32,
    /// Live invocations one org may have, whatever its plan.
    ceiling: u32,
}

/// One admitted invocation; dropping it frees its slot.
pub struct Permit<'a> {
    admission: &'a Admission,
    org: Uuid,
    limits: PluginLimits,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Admission {
    /// An admission where no org holds more than `ceiling` invocations at once.
    pub fn new(ceiling: u32) -> Admission {
        Admission { orgs: Mutex::new(HashMap::new()), share: AtomicU32::new(1), ceiling: ceiling.max(1) }
    }

    /// Sets the number of live replicas the plan's caps are split between (at least 1).
    pub fn set_share(&self, replicas: u32) {
        self.share.store(replicas.max(1), Ordering::Relaxed);
    }

    /// A plan's caps as this replica applies them: its share, rounded up (never below 1).
    fn this_replicas(&self, limits: PluginLimits) -> PluginLimits {
        let n = self.share.load(Ordering::Relaxed).max(1);
        PluginLimits { concurrency: limits.concurrency.map(|c| c.div_ceil(n).max(1)), cpu_ms_per_s: limits.cpu_ms_per_s.map(|c| c.div_ceil(n).max(1)) }
    }

    pub async fn admit(&self, org: Uuid, limits: PluginLimits) -> Result<Permit<'_>, Refused> {
        self.admit_within(org, limits, QUEUE_WAIT).await
    }

    async fn admit_within(&self, org: Uuid, limits: PluginLimits, wait: Duration) -> Result<Permit<'_>, Refused> {
        let limits = self.this_replicas(limits);
        let slots = {
            let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let u = orgs.entry(org).or_insert_with(|| OrgUse {
                slots: None,
                running: 0,
                tokens: limits.cpu_ms_per_s.map(f64::from).unwrap_or(0.0),
                refilled: now,
            });
            if let Some(rate) = limits.cpu_ms_per_s {
                let rate = f64::from(rate);
                u.tokens = (u.tokens + now.duration_since(u.refilled).as_secs_f64() * rate).min(rate);
                u.refilled = now;
                if u.tokens <= 0.0 {
                    let wait = (-u.tokens / rate).max(0.001);
                    return Err(Refused::Cpu { retry_after: Duration::from_secs_f64(wait) });
                }
            }
            u.running += 1;
            let cap = limits.concurrency.unwrap_or(self.ceiling).min(self.ceiling);
            match &u.slots {
                Some((c, s)) if *c == cap => s.clone(),
                _ => {
                    let s = Arc::new(Semaphore::new(cap as usize));
                    u.slots = Some((cap, s.clone()));
                    s
                }
            }
        };
        // From here on the permit's drop gives `running` back, whatever happens.
        let mut permit = Permit { admission: self, org, limits, _slot: None };
        match tokio::time::timeout(wait, slots.acquire_owned()).await {
            Ok(Ok(slot)) => permit._slot = Some(slot),
            _ => return Err(Refused::Concurrency),
        }
        Ok(permit)
    }

    /// Forgets orgs with nothing running and a full bucket (called periodically).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
        orgs.retain(|_, u| u.running > 0 || now.duration_since(u.refilled) < Duration::from_secs(5));
    }

    /// Orgs currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.orgs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Permit<'_> {
    /// Charges the CPU the invocation used to its org's bucket.
    pub fn charge(&self, cpu: Duration) {
        if self.limits.cpu_ms_per_s.is_none() {
            return;
        }
        let mut orgs = self.admission.orgs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = orgs.get_mut(&self.org) {
            u.tokens -= cpu.as_secs_f64() * 1000.0;
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut orgs = self.admission.orgs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = orgs.get_mut(&self.org) {
            u.running = u.running.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrency_is_capped_per_org_queues_briefly_and_frees_on_drop() {
        let a = Admission::new(1000);
        let lim = PluginLimits { concurrency: Some(2), cpu_ms_per_s: None };
        let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
        let p1 = a.admit(x, lim).await.unwrap();
        let _p2 = a.admit(x, lim).await.unwrap();
        // The third waits its queue time, then is refused.
        assert_eq!(a.admit_within(x, lim, Duration::from_millis(20)).await.err(), Some(Refused::Concurrency));
        let _other = a.admit(y, lim).await.unwrap();
        // A waiter gets the slot as soon as one is freed.
        let (third, ()) = tokio::join!(a.admit(x, lim), async move { drop(p1) });
        assert!(third.is_ok());
    }

    #[tokio::test]
    async fn each_replica_admits_its_share_of_the_caps() {
        let a = Admission::new(1000);
        a.set_share(3);
        let lim = PluginLimits { concurrency: Some(4), cpu_ms_per_s: Some(300) };
        let org = Uuid::new_v4();
        let short = Duration::from_millis(20);
        // ⌈4 / 3⌉ = 2 at once on this replica.
        let (_p1, p2) = (a.admit(org, lim).await.unwrap(), a.admit(org, lim).await.unwrap());
        assert_eq!(a.admit_within(org, lim, short).await.err(), Some(Refused::Concurrency));
        // 100 ms of CPU per second here: 150 spent leaves it 0.5 s in debt.
        p2.charge(Duration::from_millis(150));
        drop(p2);
        match a.admit(org, lim).await {
            Err(Refused::Cpu { retry_after }) => assert!(retry_after > Duration::from_millis(400), "{retry_after:?}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        a.set_share(1);
        assert!(a.admit(Uuid::new_v4(), PluginLimits { concurrency: Some(1), cpu_ms_per_s: None }).await.is_ok());
    }

    #[tokio::test]
    async fn cpu_overdraw_refuses_until_refilled() {
        let a = Admission::new(1000);
        let lim = PluginLimits { concurrency: None, cpu_ms_per_s: Some(100) };
        let org = Uuid::new_v4();
        let p = a.admit(org, lim).await.unwrap();
        p.charge(Duration::from_millis(300));
        drop(p);
        match a.admit(org, lim).await {
            Err(Refused::Cpu { retry_after }) => {
                assert!(retry_after > Duration::from_millis(1500) && retry_after <= Duration::from_secs(2), "{retry_after:?}")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(a.admit(Uuid::new_v4(), lim).await.is_ok(), "other orgs are not affected");
    }

    #[tokio::test]
    async fn no_plan_takes_an_org_past_the_ceiling_and_the_cpu_of_unmetered_plans_is_not_counted() {
        let a = Admission::new(8);
        let (org, other) = (Uuid::new_v4(), Uuid::new_v4());
        let mut permits = Vec::new();
        for _ in 0..8 {
            permits.push(a.admit(org, PluginLimits::default()).await.unwrap());
        }
        permits[0].charge(Duration::from_secs(100));
        let short = Duration::from_millis(20);
        assert_eq!(a.admit_within(org, PluginLimits::default(), short).await.err(), Some(Refused::Concurrency));
        // A plan that allows more is held to the ceiling too.
        let generous = PluginLimits { concurrency: Some(100), cpu_ms_per_s: None };
        assert_eq!(a.admit_within(org, generous, short).await.err(), Some(Refused::Concurrency));
        assert!(a.admit(other, PluginLimits::default()).await.is_ok(), "other orgs have their own share");
        drop(permits);
        assert!(a.admit(org, PluginLimits::default()).await.is_ok());
    }
}
