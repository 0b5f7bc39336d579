//! Provider credentials a plugin can use but never read (docs/providers.md, "Credential
//! grants").
//!
//! A route's [`CredentialGrant`]s name an org's provider secrets. When `outbound-http.send`
//! goes to exactly the origin (scheme, host, port) of the org's configured `base_url` for a
//! granted provider, the host puts the secret where the grant says (replacing whatever the
//! plugin put there), and removes it from the answer before the plugin sees it. Any other
//! origin gets nothing. The secrets come from a [`CredentialSource`], which the gateway
//! implements outside this module (`crate::providers`): the runtime knows nothing of the
//! database they are kept in.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, RateLimiter};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::plugin::grants::{Inject, Pace};
use crate::plugin::host::addr::AddressPolicy;

/// What replaces a credential in an answer.
pub const REDACTED: &str = "[redacted]";

/// Scheme, host and port: what a credential is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case; an IPv6 literal keeps its brackets.
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// The origin of an absolute `http(s)` URL (default ports filled in).
    pub fn of_url(url: &str) -> Option<Origin> {
        let uri: http::Uri = url.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let auth = uri.authority()?;
        let port = auth.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        Some(Origin { host: auth.host().to_ascii_lowercase(), scheme, port })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// A secret in memory: wiped when dropped, never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(Zeroizing::new(text))
    }
    /// The secret itself, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// An org's configuration of one provider, as the host uses it.
#[derive(Debug)]
pub struct ProviderAccess {
    /// The origin of the org's `base_url`: the only one its secrets are sent to.
    pub origin: Origin,
    /// Secrets by name (`api_key`, ...).
    pub secrets: HashMap<String, Secret>,
}

/// A boxed future (the trait is used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the host gets an org's provider configuration and secrets.
pub trait CredentialSource: Send + Sync {
    /// The org's configuration of `provider`; `Ok(None)` when the org has none. An error is
    /// a lookup that failed (the database), not a missing configuration.
    fn access<'a>(&'a self, org: Uuid, provider: &'a str) -> BoxFuture<'a, Result<Option<Arc<ProviderAccess>>, String>>;

    /// The address rule for connections to a configured provider origin, and whether it may
    /// be private (the operator's `GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS`).
    fn addresses(&self) -> (&AddressPolicy, bool);
}

/// The injections for one request: the grants of the provider whose configured origin the
/// request goes to, with their secrets.
pub struct Injection {
    pub provider: String,
    pub pace: Option<Pace>,
    pub items: Vec<(Inject, Secret)>,
}

impl Injection {
    /// Every form of every secret that may come back in an answer: the secret itself and its
    /// percent-encoded forms (upper- and lower-case hex, and `application/x-www-form-urlencoded`).
    pub fn needles(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for (_, s) in &self.items {
            let raw = s.expose();
            let upper = percent_encoding::utf8_percent_encode(raw, percent_encoding::NON_ALPHANUMERIC).to_string();
            let lower = lower_hex_escapes(&upper);
            let form: String = form_urlencoded::byte_serialize(raw.as_bytes()).collect();
            let query = percent_encoding::utf8_percent_encode(raw, QUERY_VALUE).to_string();
            for n in [raw.to_string(), upper, lower, form, query] {
                if !n.is_empty() && !out.iter().any(|o| o == n.as_bytes()) {
                    out.push(n.into_bytes());
                }
            }
        }
        // Longest first, so a form that contains another is replaced whole.
        out.sort_by_key(|n| std::cmp::Reverse(n.len()));
        out
    }
}

/// `%2f` for `%2F`: the same escape as some servers echo it.
fn lower_hex_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut after_percent = 0;
    for c in s.chars() {
        if c == '%' {
            after_percent = 2;
            out.push(c);
        } else if after_percent > 0 {
            after_percent -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// What a query value may hold unescaped: unreserved characters only (RFC 3986 §2.3).
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `path_and_query` with query parameter `name` set to `value` (escaped), every parameter of
/// that name the plugin wrote removed and the others kept as written.
pub fn set_query(path_and_query: &str, name: &str, value: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut parts: Vec<String> = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split_once('=').map(|(k, _)| k).unwrap_or(pair);
            let decoded: String = form_urlencoded::parse(format!("{key}=").as_bytes()).map(|(k, _)| k.into_owned()).collect();
            decoded != name
        })
        .map(str::to_string)
        .collect();
    parts.push(format!(
        "{}={}",
        percent_encoding::utf8_percent_encode(name, QUERY_VALUE),
        percent_encoding::utf8_percent_encode(value, QUERY_VALUE)
    ));
    format!("{path}?{}", parts.join("&"))
}

/// Replaces every needle in `bytes` with [`REDACTED`]; whether anything was replaced.
pub fn redact(bytes: &mut Vec<u8>, needles: &[Vec<u8>]) -> bool {
    let mut changed = false;
    for n in needles {
        let finder = memchr::memmem::Finder::new(n);
        if finder.find(bytes).is_none() {
            continue;
        }
        changed = true;
        let mut out = Vec::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        while let Some(i) = finder.find(rest) {
            out.extend_from_slice(&rest[..i]);
            out.extend_from_slice(REDACTED.as_bytes());
            rest = &rest[i + n.len()..];
        }
        out.extend_from_slice(rest);
        *bytes = out;
    }
    changed
}

/// Paces calls with a credential per (org, provider): one token bucket each, built from the
/// grant's [`Pace`] (rebuilt when a policy reload changes it).
#[derive(Default)]
pub struct Pacer {
    buckets: Mutex<HashMap<(Uuid, String), Bucket>>,
}

struct Bucket {
    pace: Pace,
    limiter: Arc<DefaultDirectRateLimiter>,
    used: Instant,
}

/// Buckets kept before idle ones are dropped.
const PACER_MAX_KEYS: usize = 10_000;

impl Pacer {
    /// `Ok` when a call may go now (and counts it); otherwise how long until one may.
    pub fn check(&self, org: Uuid, provider: &str, pace: Pace) -> Result<(), Duration> {
        let limiter = {
            let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= PACER_MAX_KEYS {
                // A bucket idle for its whole refill time is full again: the same as a new one.
                map.retain(|_, b| b.used.elapsed() < b.pace.period.saturating_mul(b.pace.burst));
            }
            let key = (org, provider.to_string());
            match map.get_mut(&key) {
                Some(b) if b.pace == pace => {
                    b.used = Instant::now();
                    b.limiter.clone()
                }
                _ => {
                    let q = governor::Quota::with_period(pace.period.max(Duration::from_nanos(1)))
                        .expect("non-zero period")
                        .allow_burst(NonZeroU32::new(pace.burst).unwrap_or(NonZeroU32::MIN));
                    let limiter = Arc::new(RateLimiter::direct(q));
                    map.insert(key, Bucket { pace, limiter: limiter.clone(), used: Instant::now() });
                    limiter
                }
            }
        };
        limiter.check().map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_fill_default_ports_and_ignore_paths() {
        let o = Origin::of_url("https://API.Example.com/v1?x=1").unwrap();
        assert_eq!((o.scheme.as_str(), o.host.as_str(), o.port), ("https", "api.example.com", 443));
        assert_eq!(Origin::of_url("http://127.0.0.1:8080/api").unwrap().port, 8080);
        assert_ne!(Origin::of_url("https://a.example:443"), Origin::of_url("http://a.example:443"));
        assert_eq!(Origin::of_url("https://a.example:443/x"), Origin::of_url("https://a.example/y"));
        assert!(Origin::of_url("ftp://a.example").is_none() && Origin::of_url("/relative").is_none());
    }

    #[test]
    fn set_query_replaces_the_plugins_value_and_keeps_the_rest() {
        assert_eq!(set_query("/v1/c", "api_key", "k"), "/v1/c?api_key=k");
        assert_eq!(set_query("/v1/c?a=1&api_key=evil&b=2", "api_key", "k"), "/v1/c?a=1&b=2&api_key=k");
        // Encoded spellings of the name are the same parameter.
        assert_eq!(set_query("/c?api%5Fkey=evil&api_key", "api_key", "k/+ &"), "/c?api_key=k%2F%2B%20%26");
    }

    #[test]
    fn redaction_covers_raw_and_encoded_forms() {
        let inj = Injection {
            provider: "p".into(),
            pace: None,
            items: vec![(Inject::Query("api_key".into()), Secret::new("s3cr/t+k ey".into()))],
        };
        let needles = inj.needles();
        let mut body = b"a s3cr/t+k ey b s3cr%2Ft%2Bk%20ey c s3cr%2ft%2bk%20ey d s3cr%2Ft%2Bk+ey e".to_vec();
        assert!(redact(&mut body, &needles));
        assert_eq!(String::from_utf8(body).unwrap(), "a [redacted] b [redacted] c [redacted] d [redacted] e");
        let mut clean = b"nothing here".to_vec();
        assert!(!redact(&mut clean, &needles));
        assert_eq!(format!("{:?}", Secret::new("x".into())), "Secret(..)");
    }

    #[test]
    fn the_pacer_allows_the_burst_then_says_how_long_to_wait() {
        let p = Pacer::default();
        let pace = Pace { period: Duration::from_secs(30), burst: 2 };
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(p.check(a, "x", pace).is_ok() && p.check(a, "x", pace).is_ok());
        let wait = p.check(a, "x", pace).unwrap_err();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        // Another org, or another provider, has its own bucket.
        assert!(p.check(b, "x", pace).is_ok() && p.check(a, "y", pace).is_ok());
    }
}
