//! Shared server state: the pool, the loaded policies with their rate limiters, and caches.

use std::ops::Deref;
use std::sync::{Arc, RwLock};

use sqlx::PgPool;

use crate::auth::Directory;
use crate::policy::PolicySet;
use crate::ratelimit::RateLimits;

/// Policies and the limiters built from them; replaced as one piece on reload.
pub struct Routing {
    pub policies: PolicySet,
    pub limits: RateLimits,
}

impl Routing {
    pub fn new(policies: PolicySet) -> Routing {
        let limits = RateLimits::new(&policies);
        Routing { policies, limits }
    }
}

impl Deref for Routing {
    type Target = PolicySet;
    fn deref(&self) -> &PolicySet {
        &self.policies
    }
}

pub struct AppState {
    pub pool: PgPool,
    pub directory: Directory,
    routing: RwLock<Arc<Routing>>,
}

impl AppState {
    pub fn new(pool: PgPool, policies: PolicySet) -> AppState {
        AppState { pool, directory: Directory::default(), routing: RwLock::new(Arc::new(Routing::new(policies))) }
    }

    /// The current policies; a request keeps the set it started with.
    pub fn policies(&self) -> Arc<Routing> {
        self.routing.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
