//! Per-org and per-user rate limits: `governor` keyed token buckets built from the policies.
//!
//! Each (route, plan) pair resolves to at most one org bucket and one user bucket. A route
//! without its own `rate_limit` for a plan shares the plan's buckets with every other such
//! route, so a plan's quota is org-wide; a route with an override gets buckets of its own.
//! Keys are org and user ids; a sweeper drops idle keys so a flood of distinct keys cannot grow
//! memory without bound. Each bucket's check-and-consume is one atomic compare-and-swap.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use uuid::Uuid;

use crate::policy::{PolicySet, Quota};

pub struct Bucket {
    /// `org` or `user`: the name in the `RateLimit-Policy` header.
    name: &'static str,
    quota: Quota,
    limiter: DefaultKeyedRateLimiter<Uuid>,
}

impl Bucket {
    fn new(name: &'static str, quota: Quota) -> Bucket {
        let burst = NonZeroU32::new(quota.burst()).unwrap_or(NonZeroU32::MIN);
        let period = Duration::from_secs(quota.rate.per_secs as u64) / quota.rate.count;
        let q = governor::Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("non-zero period")
            .allow_burst(burst);
        Bucket { name, quota, limiter: RateLimiter::keyed(q) }
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
}

impl RateLimits {
    pub fn new(set: &PolicySet) -> RateLimits {
        let mut all = Vec::new();
        let mut make = |name, q: Option<Quota>| {
            q.map(|q| {
                let b = Arc::new(Bucket::new(name, q));
                all.push(b.clone());
                b
            })
        };
        let plan_buckets: HashMap<&str, RouteBuckets> = set
            .plans
            .values()
            .map(|p| {
                (p.name.as_str(), RouteBuckets { org: make("org", p.per_org), user: make("user", p.per_user) })
            })
            .collect();
        let mut routes = HashMap::new();
        for r in &set.routes {
            let mut per_plan = HashMap::new();
            for (plan, shared) in &plan_buckets {
                let b = match r.rate_limit.get(*plan) {
                    Some(over) => RouteBuckets {
                        org: match over.per_org {
                            Some(q) => make("org", Some(q)),
                            None => shared.org.clone(),
                        },
                        user: match over.per_user {
                            Some(q) => make("user", Some(q)),
                            None => shared.user.clone(),
                        },
                    },
                    None => shared.clone(),
                };
                per_plan.insert(plan.to_string(), b);
            }
            routes.insert(r.id.clone(), per_plan);
        }
        RateLimits { routes, all, clock: DefaultClock::default() }
    }

    /// Checks and consumes one unit from the user bucket, then the org bucket.
    /// `user` is `None` for callers that are not users (webhook senders): only the org's
    /// quota applies to them.
    ///
    /// The user's bucket comes first so that a user over their own quota is refused without
    /// spending the org's: otherwise one flooding user drains the quota of every colleague.
    /// The other order would let an org-wide refusal spend the user's unit instead, which
    /// costs only that user.
    pub fn check(&self, route: &str, plan: &str, org: Uuid, user: Option<Uuid>) -> Result<(), Limited> {
        let Some(b) = self.routes.get(route).and_then(|p| p.get(plan)) else { return Ok(()) };
        for (bucket, key) in [(&b.user, user), (&b.org, Some(org))] {
            if let (Some(bucket), Some(key)) = (bucket, key) {
                if let Err(not_until) = bucket.limiter.check_key(&key) {
                    let wait = not_until.wait_time_from(self.clock.now());
                    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    let secs = secs.max(1);
                    return Err(Limited {
                        retry_after_secs: secs,
                        policy: bucket.quota.header_policy(bucket.name),
                        state: format!("\"{}\";r=0;t={secs}", bucket.name),
                        scope: bucket.name,
                    });
                }
            }
        }
        Ok(())
    }

    /// Forgets keys whose buckets are full again, and returns memory.
    pub fn sweep(&self) {
        for b in &self.all {
            b.limiter.retain_recent();
            b.limiter.shrink_to_fit();
        }
    }

    /// Number of keys currently tracked, across buckets.
    pub fn tracked_keys(&self) -> usize {
        self.all.iter().map(|b| b.limiter.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_bucket_refuses_past_burst_and_orgs_are_independent() {
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
            rl.check("w", "standard", a, Some(u)).unwrap();
        }
        let l = rl.check("w", "standard", a, Some(u)).unwrap_err();
        assert_eq!(l.scope, "user");
        assert!(l.retry_after_secs > 3000, "{l:?}");
        assert_eq!(l.policy, "\"user\";q=1;w=3600", "the quota is the rate, not the burst");
        rl.check("w", "standard", b, Some(Uuid::new_v4())).unwrap();
        for _ in 0..100 {
            rl.check("w", "unmetered", a, Some(u)).unwrap();
        }
        assert_eq!(rl.tracked_keys(), 2);
    }

    #[test]
    fn a_user_over_their_own_quota_does_not_spend_the_orgs() {
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
        let refused = (0..100).filter(|_| rl.check("w", "standard", org, Some(flooder)).is_err()).count();
        assert_eq!(refused, 98);
        // The org spent 2 of its 10 on the flooder: the colleague still has their own 2.
        for _ in 0..2 {
            rl.check("w", "standard", org, Some(colleague)).expect("the flood spent the org's quota");
        }
        assert_eq!(rl.check("w", "standard", org, Some(colleague)).unwrap_err().scope, "user");
    }
}
