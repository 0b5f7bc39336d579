//! Phase 2: per-org and per-user rate limits, before the body is read.

use crate::error::{ApiError, Code};
use crate::phases::guard::Caller;
use crate::policy::Route;
use crate::state::AppState;

pub async fn check(state: &AppState, route: &Route, caller: &Caller) -> Result<(), ApiError> {
    let (Some(org), Some(plan)) = (caller.org, caller.plan.as_deref()) else {
        // Platform routes (super-admin only) carry no tenant quota.
        return Ok(());
    };
    state.routing().limits.check(&route.id, plan, org, caller.user_key()).await.map_err(|l| {
        state.metrics.ratelimited(l.scope);
        state.console.hourly.rate_limited(org);
        ApiError::new(Code::RateLimited, format!("rate limit exceeded ({} quota)", l.scope))
            .with_header("retry-after", l.retry_after_secs.to_string())
            .with_header("ratelimit-policy", &l.policy)
            .with_header("ratelimit", &l.state)
    })
}
