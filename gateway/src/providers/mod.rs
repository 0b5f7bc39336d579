//! Per-org provider credentials (docs/providers.md, "Credentials: usable, never readable"):
//! the rules an org's `base_url` must meet, sealing secrets for `db::providers`, and the
//! [`CredentialSource`] the plugin host injects credentials from, with a short-lived cache
//! per replica that `NOTIFY gateway_invalidate` clears.
//!
//! Secrets live sealed in the database and opened only here, in [`Secret`]s that wipe
//! themselves when dropped; nothing in this module logs or returns one.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::cache::TtlCache;
use crate::db;
use crate::error::{ApiError, Code, Result};
use crate::plugin::host::addr::{classify, AddressPolicy};
use crate::plugin::host::credentials::{BoxFuture, CredentialSource, Origin, ProviderAccess, Secret};
use crate::webhooks::seal::{provider_aad, SecretKey};

/// The secret name `webhook_secret` of a `PUT` body is stored under.
pub const WEBHOOK_SECRET: &str = "webhook_secret";

/// How long resolving a `base_url`'s host may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The gateway's side of provider credentials: sealing, the address rule, and the cache.
pub struct Providers {
    pool: PgPool,
    key: SecretKey,
    cache: TtlCache<(Uuid, String), Option<Arc<ProviderAccess>>>,
    /// The address rule for provider origins: the outbound rule, with loopback treated as
    /// private when the operator allows private provider URLs.
    addresses: AddressPolicy,
    allow_private: bool,
}

impl Providers {
    /// `host` is the outbound address rule (its own addresses); `allow_private` is
    /// `GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS`.
    pub fn new(pool: PgPool, key: SecretKey, host: &AddressPolicy, allow_private: bool) -> Providers {
        let addresses = AddressPolicy::new(host.local().iter().copied());
        let addresses = if allow_private { addresses.with_loopback_allowed() } else { addresses };
        Providers { pool, key, cache: TtlCache::default(), addresses, allow_private }
    }

    /// Drops every cached configuration (on `NOTIFY gateway_invalidate`, and after a change).
    pub fn invalidate_all(&self) {
        self.cache.clear();
    }

    /// Seals a secret for (org, provider, name).
    pub fn seal(&self, org: Uuid, provider: &str, name: &str, plain: &str) -> Vec<u8> {
        self.key.seal_bound(&provider_aad(org, provider, name), plain.as_bytes())
    }

    /// The org's configuration of `provider` with its secrets opened (cached a few seconds).
    pub async fn load(&self, org: Uuid, provider: &str) -> Result<Option<Arc<ProviderAccess>>> {
        let key = (org, provider.to_string());
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let access = db::providers::sealed(&self.pool, org, provider).await?.map(|s| {
            let secrets = s
                .secrets
                .iter()
                .filter_map(|(name, sealed)| match self.key.open_bound(&provider_aad(org, provider, name), sealed) {
                    Some(plain) => {
                        let plain = zeroize::Zeroizing::new(plain);
                        Some((name.clone(), Secret::new(String::from_utf8_lossy(&plain).into_owned())))
                    }
                    None => {
                        tracing::error!(org_id = %org, provider, name = %name,
                            "a provider secret does not open with this gateway's secret key (GATEWAY_SECRET_KEY differs between replicas?)");
                        None
                    }
                })
                .collect();
            // Stored URLs were checked when written; one that no longer parses matches nothing.
            let origin = Origin::of_url(&s.config.base_url)
                .unwrap_or(Origin { scheme: "invalid".into(), host: String::new(), port: 0 });
            Arc::new(ProviderAccess { origin, secrets })
        });
        self.cache.insert(key, access.clone());
        Ok(access)
    }

    /// One secret of the org's configuration of `provider` (e.g. [`WEBHOOK_SECRET`], for the
    /// webhook verifiers).
    pub async fn secret(&self, org: Uuid, provider: &str, name: &str) -> Result<Option<Secret>> {
        Ok(self.load(org, provider).await?.and_then(|a| a.secrets.get(name).cloned()))
    }

    /// Checks an org's `base_url` (docs/providers.md): an absolute `https://` URL (or
    /// `http://` to loopback with the operator's switch) without credentials, query or
    /// fragment, whose host is not, and does not resolve to, a refused address. `resolve`:
    /// look a host name up now (a policy's default is not: it is checked on every connection).
    pub async fn check_base_url(&self, url: &str, resolve: bool) -> Result<String, ApiError> {
        self.check_url("base_url", url, resolve).await
    }

    /// [`Providers::check_base_url`]'s rules for any URL the gateway calls on a tenant's
    /// behalf (e.g. an org's `notify_url`), errors naming `field`.
    pub async fn check_url(&self, field: &str, url: &str, resolve: bool) -> Result<String, ApiError> {
        let invalid = |problem: &str| ApiError::invalid(field, problem);
        let refused = |message: String| ApiError::new(Code::ProviderUrlNotAllowed, message);
        let url = url.trim();
        if url.is_empty() || url.len() > 2048 {
            return Err(invalid("must be 1 to 2048 characters"));
        }
        if url.contains('#') {
            return Err(invalid("must not have a fragment"));
        }
        let uri: http::Uri = url.parse().map_err(|_| invalid("must be an absolute https:// URL"))?;
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => "https",
            Some(s) if s.eq_ignore_ascii_case("http") => "http",
            _ => return Err(invalid("must be an absolute https:// URL")),
        };
        let Some(auth) = uri.authority() else { return Err(invalid("must be an absolute https:// URL")) };
        if auth.as_str().contains('@') {
            return Err(invalid("must not carry credentials"));
        }
        if uri.query().is_some() || url.contains('?') {
            return Err(invalid("must not have a query"));
        }
        let host = auth.host().to_ascii_lowercase();
        if host.is_empty() {
            return Err(invalid("must name a host"));
        }
        let port = auth.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        let addrs: Vec<IpAddr> = match literal {
            Some(ip) => vec![ip],
            None if !resolve && scheme == "https" => Vec::new(),
            None => {
                let looked_up = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), port))).await;
                match looked_up {
                    Ok(Ok(a)) => a.map(|a| a.ip()).collect(),
                    _ => Vec::new(),
                }
            }
        };
        if addrs.is_empty() && (resolve || scheme == "http") && literal.is_none() {
            return Err(refused(format!("{field}: {host} does not resolve")));
        }
        if scheme == "http" {
            let loopback = addrs.iter().all(|ip| classify(*ip).range().is_some_and(|r| r.is_loopback()));
            if !(self.allow_private && loopback) {
                return Err(refused(
                    format!("{field}: http:// is allowed only to a loopback address, with GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS=1"),
                ));
            }
        }
        for ip in addrs {
            if let Err(denied) = self.addresses.check(ip, self.allow_private) {
                // The reason's name only: the addresses a name resolves to are the operator's.
                let message = match literal {
                    Some(_) => format!("{field}: {host} is {}", denied.name()),
                    None => format!("{field}: {host} resolves to a refused address ({})", denied.name()),
                };
                return Err(refused(message));
            }
        }
        Ok(url.to_string())
    }
}

impl CredentialSource for Providers {
    fn access<'a>(&'a self, org: Uuid, provider: &'a str) -> BoxFuture<'a, Result<Option<Arc<ProviderAccess>>, String>> {
        Box::pin(async move { self.load(org, provider).await.map_err(|e| crate::error::loggable(&e)) })
    }

    fn addresses(&self) -> (&AddressPolicy, bool) {
        (&self.addresses, self.allow_private)
    }
}
