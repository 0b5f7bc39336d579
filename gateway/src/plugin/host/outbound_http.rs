//! `outbound-http`: the most specific allowlist pattern first, then DNS (once), then the
//! address check (`addr::AddressPolicy`) on every answer, then one HTTP/1.1 exchange (TLS for
//! `https://`, verified against the web PKI roots plus any configured extra CA) on a
//! connection to an address we checked, so a second DNS answer cannot swap in a private one.
//! Redirects are returned to the plugin, never followed.
//!
//! The address check runs for every pattern, exact names included: a name in the allowlist
//! says nothing about where its zone points it. Only an IP-literal pattern's `allow_private`
//! relaxes it, and only as far as `AddressPolicy` allows.
//!
//! A request to exactly the org's configured origin for a granted provider credential
//! (`credentials`) needs no allowlist entry: the host adds the credential, paces the call,
//! checks the address under the provider rule (the operator's
//! `GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS`), and redacts the credential from the answer.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use wasmtime::component::HasData;

use crate::plugin::bindings::outbound_http::{HttpError, Host, IncomingResponse, OutgoingRequest};
use crate::plugin::bindings::types::Header;
use crate::plugin::grants::Inject;
use crate::plugin::host::addr::AddressPolicy;
use crate::plugin::host::credentials::{self, Injection, Origin};
use crate::plugin::host::host_pattern::most_specific;
use crate::plugin::state::HttpState;

pub struct Data;

impl HasData for Data {
    type Data<'a> = &'a mut HttpState;
}

const MAX_REQUESTS: u32 = 50;
const MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;
/// Hop-by-hop and framing headers the host owns.
pub const RESERVED: &[&str] =
    &["host", "connection", "content-length", "transfer-encoding", "upgrade", "te", "trailer", "keep-alive", "proxy-authorization", "proxy-connection"];

struct Target {
    scheme: String,
    /// Lower-case; an IPv6 literal keeps its brackets.
    host: String,
    /// The host, when it is an IP literal.
    ip: Option<IpAddr>,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, HttpError> {
    let uri: http::Uri = url.parse().map_err(|_| HttpError::InvalidRequest("not a URL".into()))?;
    let scheme = uri.scheme_str().ok_or_else(|| HttpError::InvalidRequest("URL must be absolute".into()))?;
    if scheme != "http" && scheme != "https" {
        return Err(HttpError::NotAllowed(format!("scheme {scheme}")));
    }
    let auth = uri.authority().ok_or_else(|| HttpError::InvalidRequest("URL has no host".into()))?;
    if auth.as_str().contains('@') {
        return Err(HttpError::InvalidRequest("credentials in URLs are not allowed".into()));
    }
    let host = auth.host().to_ascii_lowercase();
    let port = auth.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
    Ok(Target { scheme: scheme.to_string(), host, ip, port, path })
}

/// The addresses to connect to: the literal, or every DNS answer, each of which must pass
/// the address check. One refused answer refuses the name: a name that mixes allowed and
/// refused addresses is how rebinding starts, and its zone's owner picks the mix.
async fn resolve_checked(t: &Target, policy: &AddressPolicy, allow_private: bool) -> Result<Vec<SocketAddr>, Refused> {
    let addrs: Vec<SocketAddr> = match t.ip {
        Some(ip) => vec![SocketAddr::new(ip, t.port)],
        None => tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|e| Refused::Error(HttpError::DnsFailed(format!("{}: {e}", t.host))))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(Refused::Error(HttpError::DnsFailed(t.host.clone())));
    }
    for a in &addrs {
        if let Err(denied) = policy.check(a.ip(), allow_private) {
            // A DNS name's answers are not the caller's to learn (they map the operator's
            // network): it hears the reason's name only.
            let message = match t.ip {
                Some(_) => denied.to_string(),
                None => format!("{} resolves to a refused address ({})", t.host, denied.name()),
            };
            return Err(Refused::Address(denied, HttpError::ForbiddenAddress(message)));
        }
    }
    Ok(addrs)
}

/// Why [`resolve_checked`] gave no address.
enum Refused {
    Error(HttpError),
    /// The refused address (for the operator's log) and what the caller hears.
    Address(crate::plugin::host::addr::Denied, HttpError),
}

/// One HTTP/1.1 exchange with `t` on a connection to one of `addrs` (already checked), TLS
/// for `https://`; an answer body above `max_response` is refused.
async fn exchange(
    tls: &std::sync::Arc<rustls::ClientConfig>,
    t: &Target,
    addrs: &[SocketAddr],
    req: OutgoingRequest,
    max_response: usize,
) -> Result<IncomingResponse, HttpError> {
    let mut last = None;
    let mut stream = None;
    for a in addrs {
        match tokio::net::TcpStream::connect(a).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = stream.ok_or_else(|| {
        HttpError::ConnectFailed(last.map(|e| e.to_string()).unwrap_or_else(|| "no address".into()))
    })?;
    if t.scheme == "https" {
        let name = match t.ip {
            Some(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
            None => rustls::pki_types::ServerName::try_from(t.host.clone())
                .map_err(|_| HttpError::InvalidRequest(format!("bad TLS name {}", t.host)))?,
        };
        let tls = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| HttpError::ConnectFailed(format!("TLS: {e}")))?;
        return send_over(TokioIo::new(tls), t, req, max_response).await;
    }
    send_over(TokioIo::new(stream), t, req, max_response).await
}

/// One HTTP/1.1 exchange over an established (plain or TLS) connection.
async fn send_over<IO>(io: IO, t: &Target, req: OutgoingRequest, cap: usize) -> Result<IncomingResponse, HttpError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| HttpError::Protocol(e.to_string()))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| HttpError::InvalidRequest(format!("bad method {:?}", req.method)))?;
    let host_header = if (t.scheme == "http" && t.port == 80) || (t.scheme == "https" && t.port == 443) {
        t.host.clone()
    } else {
        format!("{}:{}", t.host, t.port)
    };
    let mut b = http::Request::builder().method(method).uri(&t.path).header(http::header::HOST, host_header);
    for h in req.headers.iter().take(64) {
        let name = h.name.to_ascii_lowercase();
        if RESERVED.contains(&name.as_str()) {
            return Err(HttpError::InvalidRequest(format!("header {name} is set by the host")));
        }
        b = b.header(name.as_str(), h.value.as_str());
    }
    let request = b
        .body(Full::new(Bytes::from(req.body)))
        .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
    let resp = sender.send_request(request).await.map_err(|e| HttpError::Protocol(e.to_string()))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| Header { name: k.as_str().to_string(), value: String::from_utf8_lossy(v.as_bytes()).into_owned() })
        .collect();
    let body = http_body_util::Limited::new(resp.into_body(), cap).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            HttpError::ResponseTooLarge(cap as u64)
        } else {
            HttpError::Protocol(e.to_string())
        }
    })?;
    driver.abort();
    Ok(IncomingResponse { status, headers, body: body.to_bytes().to_vec() })
}

/// A request the gateway itself sends on a tenant's behalf (the chains' `notify`), under the
/// same address rule as provider calls: `policy` and `allow_private` as
/// `CredentialSource::addresses` gives them, checked after resolution, connecting only to a
/// checked address. No allowlist, no credential; redirects are not followed.
pub async fn send_checked(
    tls: &std::sync::Arc<rustls::ClientConfig>,
    policy: &AddressPolicy,
    allow_private: bool,
    url: &str,
    req: OutgoingRequest,
    max_response: usize,
) -> Result<IncomingResponse, HttpError> {
    let t = parse_url(url)?;
    let addrs = resolve_checked(&t, policy, allow_private).await.map_err(|r| match r {
        Refused::Error(e) | Refused::Address(_, e) => e,
    })?;
    exchange(tls, &t, &addrs, req, max_response).await
}

impl HttpState {
    async fn resolve(&self, t: &Target, policy: &AddressPolicy, allow_private: bool) -> Result<Vec<SocketAddr>, HttpError> {
        match resolve_checked(t, policy, allow_private).await {
            Ok(addrs) => Ok(addrs),
            Err(Refused::Error(e)) => Err(e),
            Err(Refused::Address(denied, e)) => {
                // Scheme, host and port only: the path and query may carry the plugin's secrets.
                tracing::warn!(request_id = %self.request_id, org_id = %self.org, plugin = %self.plugin,
                    scheme = %t.scheme, host = %t.host, port = t.port, address = %denied.ip, allow_private,
                    reason = denied.name(), detail = %denied, "outbound_refused");
                Err(e)
            }
        }
    }

    async fn exchange(&self, t: &Target, addrs: &[SocketAddr], req: OutgoingRequest) -> Result<IncomingResponse, HttpError> {
        exchange(&self.tls, t, addrs, req, self.grants.http_max_response).await
    }
}

impl Host for HttpState {
    async fn send(&mut self, req: OutgoingRequest) -> Result<IncomingResponse, HttpError> {
        self.send_inner(req).await
    }
}

impl HttpState {
    async fn send_inner(&mut self, mut req: OutgoingRequest) -> Result<IncomingResponse, HttpError> {
        self.requests += 1;
        if self.requests > MAX_REQUESTS {
            return Err(HttpError::InvalidRequest(format!("more than {MAX_REQUESTS} requests in one invocation")));
        }
        if req.body.len() > MAX_REQUEST_BODY {
            return Err(HttpError::InvalidRequest("request body too large".into()));
        }
        let mut t = parse_url(&req.url)?;
        let timeout = self.grants.http_timeout;
        let work = async {
            let origin = Origin { scheme: t.scheme.clone(), host: t.host.clone(), port: t.port };
            let found = self.injection_for(&origin).await;
            let source = self.credentials.clone();
            let (injection, policy, allow_private) = match (found.injection, source.as_deref()) {
                (Some(injection), Some(source)) => {
                    let (policy, allow_private) = source.addresses();
                    (Some(injection), policy, allow_private)
                }
                _ => {
                    let pattern = most_specific(&self.grants.hosts, &t.scheme, &t.host, t.port).ok_or_else(|| {
                        if found.lookup_failed {
                            HttpError::ConnectFailed("provider credentials are unavailable; try again".into())
                        } else if found.unconfigured {
                            HttpError::NotAllowed("provider not configured for this org".into())
                        } else {
                            HttpError::NotAllowed(format!("{}://{}:{}", t.scheme, t.host, t.port))
                        }
                    })?;
                    (None, &*self.addresses, pattern.allow_private)
                }
            };
            let Some(injection) = injection else {
                let addrs = self.resolve(&t, policy, allow_private).await?;
                return self.exchange(&t, &addrs, req).await;
            };
            if let Some(pace) = injection.pace {
                if let Err(wait) = self.pacer.check(self.org, &injection.provider, pace) {
                    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    tracing::info!(request_id = %self.request_id, org_id = %self.org, plugin = %self.plugin,
                        provider = %injection.provider, retry_after = secs, "provider_call_paced");
                    return Ok(paced(secs.max(1)));
                }
            }
            inject(&mut t, &mut req, &injection);
            let addrs = self.resolve(&t, policy, allow_private).await?;
            let mut resp = self.exchange(&t, &addrs, req).await?;
            let needles = injection.needles();
            credentials::redact(&mut resp.body, &needles);
            for h in &mut resp.headers {
                let mut value = std::mem::take(&mut h.value).into_bytes();
                credentials::redact(&mut value, &needles);
                h.value = String::from_utf8_lossy(&value).into_owned();
            }
            // Scheme, host and port only: the query carries the credential.
            tracing::info!(request_id = %self.request_id, org_id = %self.org, plugin = %self.plugin,
                provider = %injection.provider, scheme = %t.scheme, host = %t.host, port = t.port,
                status = resp.status, "provider_call");
            Ok(resp)
        };
        tokio::time::timeout(timeout, work).await.unwrap_or(Err(HttpError::Timeout))
    }

    /// The credentials to add for a request to `origin`: those of the granted provider whose
    /// configured origin it is, if any.
    async fn injection_for(&self, origin: &Origin) -> Found {
        let mut found = Found { injection: None, unconfigured: false, lookup_failed: false };
        if self.grants.credentials.is_empty() {
            return found;
        }
        let Some(source) = self.credentials.clone() else {
            found.unconfigured = true;
            return found;
        };
        let mut seen: Vec<&str> = Vec::new();
        for g in &self.grants.credentials {
            if seen.contains(&g.provider.as_str()) {
                continue;
            }
            seen.push(&g.provider);
            let access = match source.access(self.org, &g.provider).await {
                Ok(Some(a)) => a,
                Ok(None) => {
                    found.unconfigured = true;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(request_id = %self.request_id, org_id = %self.org, plugin = %self.plugin,
                        provider = %g.provider, error = %e, "provider_credentials_unavailable");
                    found.lookup_failed = true;
                    continue;
                }
            };
            if access.origin != *origin {
                continue;
            }
            let items = self
                .grants
                .credentials
                .iter()
                .filter(|c| c.provider == g.provider)
                .filter_map(|c| access.secrets.get(&c.name).map(|s| (c.inject.clone(), s.clone())))
                .collect();
            found.injection = Some(Injection { provider: g.provider.clone(), pace: g.pace, items });
            return found;
        }
        found
    }
}

/// What [`HttpState::injection_for`] found.
struct Found {
    injection: Option<Injection>,
    /// A granted provider has no configuration for this org.
    unconfigured: bool,
    /// A granted provider's configuration could not be read.
    lookup_failed: bool,
}

/// Puts the credentials where their grants say, replacing what the plugin put there. Headers
/// go first, so the cap on the plugin's headers cannot crowd them out.
fn inject(t: &mut Target, req: &mut OutgoingRequest, injection: &Injection) {
    for (inject, secret) in &injection.items {
        match inject {
            Inject::Query(name) => t.path = credentials::set_query(&t.path, name, secret.expose()),
            Inject::Header(name) => {
                req.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
                req.headers.insert(0, Header { name: name.clone(), value: secret.expose().to_string() });
            }
            Inject::Bearer => {
                req.headers.retain(|h| !h.name.eq_ignore_ascii_case("authorization"));
                req.headers.insert(0, Header { name: "authorization".into(), value: format!("Bearer {}", secret.expose()) });
            }
        }
    }
}

/// The answer to a call over its provider's pace: what the provider would say.
fn paced(retry_after_secs: u64) -> IncomingResponse {
    IncomingResponse {
        status: 429,
        headers: vec![
            Header { name: "retry-after".into(), value: retry_after_secs.to_string() },
            Header { name: "content-type".into(), value: "application/json".into() },
        ],
        body: br#"{"error":"paced by the gateway: over the provider's rate for this org"}"#.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::host::credentials::Secret;

    #[test]
    fn bearer_replaces_the_plugins_authorization_and_is_redacted_from_answers() {
        let mut t = parse_url("https://api.example/v1/chat/completions?x=1").unwrap();
        let mut req = OutgoingRequest {
            method: "POST".into(),
            url: "https://api.example/v1/chat/completions?x=1".into(),
            headers: vec![
                Header { name: "Authorization".into(), value: "Bearer plugin-made-up".into() },
                Header { name: "content-type".into(), value: "application/json".into() },
                Header { name: "AUTHORIZATION".into(), value: "Basic eA==".into() },
            ],
            body: vec![],
        };
        let injection = Injection { provider: "openai".into(), pace: None, items: vec![(Inject::Bearer, Secret::new("sk-live key/1".into()))] };
        inject(&mut t, &mut req, &injection);
        let auth: Vec<_> = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("authorization")).map(|h| h.value.as_str()).collect();
        assert_eq!(auth, ["Bearer sk-live key/1"]);
        assert_eq!(req.headers.len(), 2);
        // The URL is untouched: the secret is in the header only.
        assert_eq!(t.path, "/v1/chat/completions?x=1");
        let mut echoed = b"{\"seen\": \"Bearer sk-live key/1\", \"q\": \"sk-live%20key%2F1\"}".to_vec();
        assert!(credentials::redact(&mut echoed, &injection.needles()));
        assert_eq!(String::from_utf8(echoed).unwrap(), "{\"seen\": \"Bearer [redacted]\", \"q\": \"[redacted]\"}");
    }
}
