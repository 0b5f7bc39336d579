//! Per-org and per-user rate limits: GCRA buckets built from the policies, counted per
//! process (`governor`) or, with several replicas, in a store they share (see [`fleet`]).
//!
//! Each (route, plan) pair resolves to at most one org bucket and one user bucket. A route
//! without its own `rate_limit` for a plan shares the plan's buckets with every other such
//! route, so a plan's quota is org-wide; a route with an override gets buckets of its own.
//! Keys are org and user ids; a sweeper drops idle keys so a flood of distinct keys cannot grow
//! memory without bound. Each local bucket's check-and-consume is one atomic compare-and-swap.
//!
//! Shared: a replica leases a few tokens of a key's bucket from the store at a time (one
//! round trip, when its lease is spent or lapsed) and spends them without asking again; a
//! refusal from the store is remembered until the bucket's next token is due, so a flood of
//! refused requests costs no round trips either. The store never grants more than the bucket
//! holds, so N replicas together admit at most burst + rate × t; what they may lose is the
//! unspent rest of leases that lapse (see docs/scaling.md).

pub mod fleet;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use uuid::Uuid;

use crate::policy::{PolicySet, Quota};
pub use fleet::Fleet;

/// How long leased tokens stay spendable: past it, what is left of a lease is dropped (the
/// tokens were taken from the bucket at lease time; spending them much later would let a
/// replica exceed the rate over a window).
const LEASE_TTL: Duration = Duration::from_millis(250);
/// A lease covers about this much of the bucket's rate (and at most a quarter of its burst).
const LEASE_SPAN_SECS: f64 = 0.1;

/// Tokens a replica holds of one key's shared bucket.
#[derive(Default)]
struct Held {
    state: Mutex<HeldState>,
    /// One lease at a time per key on this replica: concurrent requests wait for it instead of
    /// each paying a round trip.
    refill: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct HeldState {
    tokens: u32,
    until: Option<Instant>,
    /// The store refused: no token before this.
    refused_until: Option<Instant>,
}

fn governor_quota(quota: &Quota, share: u32) -> governor::Quota {
    let share = share.max(1);
    let burst = NonZeroU32::new(quota.burst().div_ceil(share)).unwrap_or(NonZeroU32::MIN);
    let period = Duration::from_secs(quota.rate.per_secs as u64) * share / quota.rate.count;
    governor::Quota::with_period(period.max(Duration::from_nanos(1))).expect("non-zero period").allow_burst(burst)
}

pub struct Bucket {
    /// `org` or `user`: the name in the `RateLimit-Policy` header.
    name: &'static str,
    quota: Quota,
    limiter: DefaultKeyedRateLimiter<Uuid>,
    /// The limiter of a replica's share (limit / live replicas) while the store is away.
    share: RwLock<Option<(u32, Arc<DefaultKeyedRateLimiter<Uuid>>)>>,
    /// The bucket's name in the shared store: the same on every replica with these policies,
    /// and a new one when the quota changes.
    store_key: String,
    /// Seconds per token, and the burst tolerance (burst × interval).
    interval: f64,
    tolerance: f64,
    lease_size: u32,
    leases: DashMap<Uuid, Arc<Held>>,
}

impl Bucket {
    fn new(name: &'static str, quota: Quota, store_key: String) -> Bucket {
        let interval = f64::from(quota.rate.per_secs) / f64::from(quota.rate.count);
        let burst = quota.burst().max(1);
        let lease_size = ((f64::from(quota.rate.count) / f64::from(quota.rate.per_secs) * LEASE_SPAN_SECS) as u32).clamp(1, (burst / 4).max(1));
        Bucket {
            name,
            limiter: RateLimiter::keyed(governor_quota(&quota, 1)),
            share: RwLock::new(None),
            store_key: format!("{store_key}/{name}/{}/{}/{burst}", quota.rate.count, quota.rate.per_secs),
            interval,
            tolerance: f64::from(burst) * interval,
            lease_size,
            leases: DashMap::new(),
            quota,
        }
    }

    fn limited(&self, wait: Duration) -> Limited {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let secs = secs.max(1);
        Limited {
            retry_after_secs: secs,
            policy: self.quota.header_policy(self.name),
            state: format!("\"{}\";r=0;t={secs}", self.name),
            scope: self.name,
        }
    }

    async fn check(&self, fleet: &Fleet, clock: &DefaultClock, key: Uuid) -> Result<(), Limited> {
        if fleet.shared() {
            if let Some(r) = self.check_shared(fleet, key).await {
                return r;
            }
        }
        let share = fleet.share();
        let shared_limiter;
        let limiter = if share <= 1 {
            &self.limiter
        } else {
            shared_limiter = self.share_limiter(share);
            &*shared_limiter
        };
        limiter.check_key(&key).map_err(|not_until| self.limited(not_until.wait_time_from(clock.now())))
    }

    fn share_limiter(&self, share: u32) -> Arc<DefaultKeyedRateLimiter<Uuid>> {
        if let Some((n, l)) = &*self.share.read().unwrap_or_else(|p| p.into_inner()) {
            if *n == share {
                return l.clone();
            }
        }
        let l = Arc::new(RateLimiter::keyed(governor_quota(&self.quota, share)));
        *self.share.write().unwrap_or_else(|p| p.into_inner()) = Some((share, l.clone()));
        l
    }

    /// Spends a held token, or says the store refused until a time still ahead; `None` when
    /// a lease is needed.
    fn take(&self, held: &Held, now: Instant) -> Option<Result<(), Limited>> {
        let mut s = held.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = s.refused_until {
            if now < t {
                return Some(Err(self.limited(t - now)));
            }
            s.refused_until = None;
        }
        if s.tokens > 0 && s.until.is_some_and(|u| now < u) {
            s.tokens -= 1;
            return Some(Ok(()));
        }
        None
    }

    /// `None`: the store did not answer.
    async fn check_shared(&self, fleet: &Fleet, key: Uuid) -> Option<Result<(), Limited>> {
        let held = match self.leases.get(&key) {
            Some(h) => h.clone(),
            None => self.leases.entry(key).or_default().clone(),
        };
        if let Some(r) = self.take(&held, Instant::now()) {
            return Some(r);
        }
        let _turn = held.refill.lock().await;
        // Another request may have leased while this one waited for its turn.
        if let Some(r) = self.take(&held, Instant::now()) {
            return Some(r);
        }
        let lease = fleet.lease(&format!("{}/{key}", self.store_key), self.interval, self.tolerance, self.lease_size).await?;
        let now = Instant::now();
        let mut s = held.state.lock().unwrap_or_else(|p| p.into_inner());
        if lease.granted > 0 {
            *s = HeldState { tokens: lease.granted - 1, until: Some(now + LEASE_TTL), refused_until: None };
            Some(Ok(()))
        } else {
            // The next token is due when the bucket's TAT is within its tolerance again.
            let wait = Duration::from_secs_f64((lease.tat - self.tolerance + self.interval - lease.now).max(0.001));
            *s = HeldState { tokens: 0, until: None, refused_until: Some(now + wait) };
            Some(Err(self.limited(wait)))
        }
    }

    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        if let Some((_, l)) = &*self.share.read().unwrap_or_else(|p| p.into_inner()) {
            l.retain_recent();
            l.shrink_to_fit();
        }
        let now = Instant::now();
        self.leases.retain(|_, h| {
            let s = h.state.lock().unwrap_or_else(|p| p.into_inner());
            s.until.is_some_and(|u| u > now) || s.refused_until.is_some_and(|u| u > now)
        });
        self.leases.shrink_to_fit();
    }

    fn tracked(&self) -> usize {
        self.limiter.len() + self.leases.len() + self.share.read().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, |(_, l)| l.len())
    }
}

#[derive(Clone, Default)]
struct RouteBuckets {
    org: Option<Arc<Bucket>>,
    user: Option<Arc<Bucket>>,
}

/// A refusal: how long to wait, and the headers that say so.
#[derive(Debug)]
pub struct Limited {
    pub retry_after_secs: u64,
    pub policy: String,
    pub state: String,
    pub scope: &'static str,
}

pub struct RateLimits {
    /// route id -> plan name -> buckets.
    routes: HashMap<Arc<str>, HashMap<String, RouteBuckets>>,
    all: Vec<Arc<Bucket>>,
    clock: DefaultClock,
    fleet: Arc<Fleet>,
}

impl RateLimits {
    /// Limits counted by this process alone.
    pub fn new(set: &PolicySet) -> RateLimits {
        RateLimits::with_fleet(set, Arc::new(Fleet::local()))
    }

    pub fn with_fleet(set: &PolicySet, fleet: Arc<Fleet>) -> RateLimits {
        let mut all = Vec::new();
        let mut make = |name, q: Option<Quota>, store_key: String| {
            q.map(|q| {
                let b = Arc::new(Bucket::new(name, q, store_key));
                all.push(b.clone());
                b
            })
        };
        let plan_buckets: HashMap<&str, RouteBuckets> = set
            .plans
            .values()
            .map(|p| {
                (
                    p.name.as_str(),
                    RouteBuckets {
                        org: make("org", p.per_org, format!("{}/*", p.name)),
                        user: make("user", p.per_user, format!("{}/*", p.name)),
                    },
                )
            })
            .collect();
        let mut routes = HashMap::new();
        for r in &set.routes {
            let mut per_plan = HashMap::new();
            for (plan, shared) in &plan_buckets {
                let own = format!("{plan}/route:{}", r.id);
                let b = match r.rate_limit.get(*plan) {
                    Some(over) => RouteBuckets {
                        org: match over.per_org {
                            Some(q) => make("org", Some(q), own.clone()),
                            None => shared.org.clone(),
                        },
                        user: match over.per_user {
                            Some(q) => make("user", Some(q), own),
                            None => shared.user.clone(),
                        },
                    },
                    None => shared.clone(),
                };
                per_plan.insert(plan.to_string(), b);
            }
            routes.insert(r.id.clone(), per_plan);
        }
        RateLimits { routes, all, clock: DefaultClock::default(), fleet }
    }

    /// Checks and consumes one unit from the user bucket, then the org bucket.
    /// `user` is `None` for callers that are not users (webhook senders): only the org's
    /// quota applies to them.
    ///
    /// The user's bucket comes first so that a user over their own quota is refused without
    /// spending the org's: otherwise one flooding user drains the quota of every colleague.
    /// The other order would let an org-wide refusal spend the user's unit instead, which
    /// costs only that user.
    pub async fn check(&self, route: &str, plan: &str, org: Uuid, user: Option<Uuid>) -> Result<(), Limited> {
        let Some(b) = self.routes.get(route).and_then(|p| p.get(plan)) else { return Ok(()) };
        for (bucket, key) in [(&b.user, user), (&b.org, Some(org))] {
            if let (Some(bucket), Some(key)) = (bucket, key) {
                bucket.check(&self.fleet, &self.clock, key).await?;
            }
        }
        Ok(())
    }

    /// Forgets keys whose buckets are full again (and lapsed leases), and returns memory.
    pub fn sweep(&self) {
        for b in &self.all {
            b.sweep();
        }
    }

    /// Number of keys currently tracked, across buckets.
    pub fn tracked_keys(&self) -> usize {
        self.all.iter().map(|b| b.tracked()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn user_bucket_refuses_past_burst_and_orgs_are_independent() {
        let set = PolicySet::from_sources(
            &[(
                "p.toml".into(),
                "[plans.standard]\ndefault = true\nper_user = { rate = \"1/h\", burst = 3 }\n\
                 [plans.unmetered]\n\
                 [[route]]\nid = \"w\"\nmethod = \"GET\"\npath = \"/w\"\ntarget = \"native:whoami\"\nroles = [\"member\"]\n"
                    .into(),
            )],
        )
        .unwrap();
        let rl = RateLimits::new(&set);
        let (a, b, u) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..3 {
            rl.check("w", "standard", a, Some(u)).await.unwrap();
        }
        let l = rl.check("w", "standard", a, Some(u)).await.unwrap_err();
        assert_eq!(l.scope, "user");
        assert!(l.retry_after_secs > 3000, "{l:?}");
        assert_eq!(l.policy, "\"user\";q=1;w=3600", "the quota is the rate, not the burst");
        rl.check("w", "standard", b, Some(Uuid::new_v4())).await.unwrap();
        for _ in 0..100 {
            rl.check("w", "unmetered", a, Some(u)).await.unwrap();
        }
        assert_eq!(rl.tracked_keys(), 2);
    }

    #[tokio::test]
    async fn a_user_over_their_own_quota_does_not_spend_the_orgs() {
        let set = PolicySet::from_sources(
            &[(
                "p.toml".into(),
                "[plans.standard]\ndefault = true\nper_org = { rate = \"10/h\", burst = 10 }\nper_user = { rate = \"2/h\", burst = 2 }\n\
                 [[route]]\nid = \"w\"\nmethod = \"GET\"\npath = \"/w\"\ntarget = \"native:whoami\"\nroles = [\"member\"]\n"
                    .into(),
            )],
        )
        .unwrap();
        let rl = RateLimits::new(&set);
        let (org, flooder, colleague) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut refused = 0;
        for _ in 0..100 {
            refused += usize::from(rl.check("w", "standard", org, Some(flooder)).await.is_err());
        }
        assert_eq!(refused, 98);
        // The org spent 2 of its 10 on the flooder: the colleague still has their own 2.
        for _ in 0..2 {
            rl.check("w", "standard", org, Some(colleague)).await.expect("the flood spent the org's quota");
        }
        assert_eq!(rl.check("w", "standard", org, Some(colleague)).await.unwrap_err().scope, "user");
    }
}
