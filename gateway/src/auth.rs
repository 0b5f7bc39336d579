//! Credentials: opaque bearer tokens (shown once, stored as SHA-256) and the short-lived cache
//! that keeps token checks off the database on the hot path.
//!
//! Cache entries live a few seconds at most; revocations and plan changes also broadcast a
//! `NOTIFY` (see `db::INVALIDATE_CHANNEL`) that clears every replica's cache at once.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::cache::TtlCache;
use crate::db;
use crate::error::Result;
use crate::role::Role;

/// A fresh random token: `gw_` and 32 random bytes, base64url.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("gw_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A short, non-reversible tag for logs (never the token itself).
pub fn log_tag(secret: &str) -> String {
    hex::encode(&Sha256::digest(secret.as_bytes())[..6])
}

/// Who is calling: what the credential says, and, once the guard has decided, the org the
/// request acts in. One type from the token cache to the handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: Role,
    /// The token (or, on webhook routes, the endpoint id) that authenticated the request.
    pub token_id: Uuid,
    /// The user behind the token; `None` for super-admins.
    pub user: Option<Uuid>,
    /// The org: the token's (`None` for super-admins until `X-Org-Id` names one, and on
    /// platform routes).
    pub org: Option<Uuid>,
    pub plan: Option<String>,
    /// On webhook routes: the endpoint the delivery is addressed to (not yet verified).
    pub endpoint: Option<std::sync::Arc<crate::webhooks::Endpoint>>,
}

impl Caller {
    /// The key of the per-user bucket: the user, or the token for super-admins.
    pub fn user_key(&self) -> Option<Uuid> {
        if self.endpoint.is_some() {
            return None;
        }
        Some(self.user.unwrap_or(self.token_id))
    }
}

/// Token and org-plan caches.
pub struct Directory {
    tokens: TtlCache<[u8; 32], Option<Caller>>,
    plans: TtlCache<Uuid, Option<String>>,
    /// Tokens that were valid when last looked up, for [`KNOWN_TTL`]: whether a lookup is a
    /// stranger's (limited per address) must not depend on the 5 s value cache, or a
    /// legitimate client sharing an address with a flood is refused whenever its entry
    /// expires. A token found revoked or unknown leaves this set at once.
    known: TtlCache<[u8; 32], ()>,
}

/// How long a token that was valid stays "known" for the per-address limit on unknown
/// credentials (its value is still looked up every [`crate::cache::TTL`]).
pub const KNOWN_TTL: std::time::Duration = std::time::Duration::from_secs(600);

impl Default for Directory {
    fn default() -> Self {
        Directory { tokens: TtlCache::default(), plans: TtlCache::default(), known: TtlCache::with_ttl(KNOWN_TTL) }
    }
}

impl Directory {
    /// Whether looking this token up costs the database nothing a stranger could abuse: its
    /// answer is cached, or it was valid within [`KNOWN_TTL`].
    pub fn known(&self, token: &str) -> bool {
        let key = digest(token);
        self.tokens.get(&key).is_some() || self.known.get(&key).is_some()
    }

    /// The caller a bearer token names, or `None` for an unknown or revoked one.
    pub async fn authenticate(&self, pool: &PgPool, token: &str) -> Result<Option<Caller>> {
        self.authenticate_digest(pool, digest(token)).await
    }

    /// [`Directory::authenticate`] by the token's digest (the console's sessions keep the
    /// digest, never the token, to notice a revocation).
    pub async fn authenticate_digest(&self, pool: &PgPool, key: [u8; 32]) -> Result<Option<Caller>> {
        if let Some(hit) = self.tokens.get(&key) {
            return Ok(hit);
        }
        let row = db::tokens::find_active(pool, &key).await?;
        let caller = row.and_then(|r| {
            Some(Caller {
                token_id: r.id,
                role: Role::parse(&r.role)?,
                org: r.org_id,
                plan: r.plan,
                user: r.user_id,
                endpoint: None,
            })
        });
        if caller.is_some() {
            self.known.insert(key, ());
        } else {
            self.known.remove(&key);
        }
        self.tokens.insert(key, caller.clone());
        Ok(caller)
    }

    /// The plan of an org, or `None` if the org does not exist.
    pub async fn org_plan(&self, pool: &PgPool, org: Uuid) -> Result<Option<String>> {
        if let Some(hit) = self.plans.get(&org) {
            return Ok(hit);
        }
        let plan = db::orgs::plan_of(pool, org).await?;
        self.plans.insert(org, plan.clone());
        Ok(plan)
    }

    pub fn invalidate_all(&self) {
        self.tokens.clear();
        self.plans.clear();
    }
}


/// Failed credentials per client address. Every unknown token or webhook endpoint id costs a
/// database lookup; an address that keeps presenting them is refused (429) before the lookup,
/// while credentials already known to the cache are still served. A token bucket per address:
/// `rate` failures per second, `burst` at once; idle addresses are swept.
pub struct Strangers {
    buckets: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (f64, std::time::Instant)>>,
    rate: f64,
    burst: f64,
}

impl Default for Strangers {
    fn default() -> Strangers {
        Strangers::new(10.0, 50.0)
    }
}

impl Strangers {
    pub fn new(rate: f64, burst: f64) -> Strangers {
        Strangers { buckets: Default::default(), rate, burst }
    }

    fn refill(&self, b: &mut (f64, std::time::Instant)) {
        let now = std::time::Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * self.rate).min(self.burst);
        b.1 = now;
    }

    /// How long this address must wait before its next uncached credential is looked up.
    pub fn blocked(&self, ip: std::net::IpAddr) -> Option<std::time::Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.get_mut(&ip)?;
        self.refill(b);
        (b.0 < 1.0).then(|| std::time::Duration::from_secs_f64((1.0 - b.0) / self.rate))
    }

    /// Records a failed credential from this address.
    pub fn failed(&self, ip: std::net::IpAddr) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(ip).or_insert((self.burst, std::time::Instant::now()));
        self.refill(b);
        b.0 -= 1.0;
    }

    /// Forgets addresses whose bucket is full again.
    pub fn sweep(&self) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (rate, burst) = (self.rate, self.burst);
        buckets.retain(|_, b| b.0 + b.1.elapsed().as_secs_f64() * rate < burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_burst_of_failures_and_others_are_not() {
        let s = Strangers::new(1.0, 3.0);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(s.blocked(a).is_none());
            s.failed(a);
        }
        let wait = s.blocked(a).expect("blocked after 3 failures");
        assert!(wait <= std::time::Duration::from_secs(1));
        assert!(s.blocked(b).is_none());
    }

    #[test]
    fn tokens_are_random_and_hash_to_32_bytes() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with("gw_") && a.len() == 3 + 43);
        assert_eq!(digest(&a).len(), 32);
        assert_ne!(log_tag(&a), log_tag(&b));
    }
}
