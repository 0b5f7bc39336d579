//! `outbound-http`: the most specific allowlist pattern first, then DNS (once), then the
//! address check (`addr::AddressPolicy`) on every answer, then one HTTP/1.1 exchange (TLS for
//! `https://`, verified against the web PKI roots plus any configured extra CA) on a
//! connection to an address we checked, so a second DNS answer cannot swap in a private one.
//! Redirects are returned to the plugin, never followed.
//!
//! The address check runs for every pattern, exact names included: a name in the allowlist
//! says nothing about where its zone points it. Only an IP-literal pattern's `allow_private`
//! relaxes it, and only as far as `AddressPolicy` allows.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use wasmtime::component::HasData;

use crate::plugin::bindings::outbound_http::{HttpError, Host, IncomingResponse, OutgoingRequest};
use crate::plugin::bindings::types::Header;
use crate::plugin::host::host_pattern::most_specific;
use crate::plugin::state::HttpState;

pub struct Data;

impl HasData for Data {
    type Data<'a> = &'a mut HttpState;
}

const MAX_REQUESTS: u32 = 50;
const MAX_REQUEST_BODY: usize = 4 * 1024 * 1024;
/// Hop-by-hop and framing headers the host owns.
const RESERVED: &[&str] =
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

impl HttpState {
    /// The addresses to connect to: the literal, or every DNS answer, each of which must pass
    /// the address check. One refused answer refuses the name: a name that mixes allowed and
    /// refused addresses is how rebinding starts, and its zone's owner picks the mix.
    async fn resolve(&self, t: &Target, allow_private: bool) -> Result<Vec<SocketAddr>, HttpError> {
        let addrs: Vec<SocketAddr> = match t.ip {
            Some(ip) => vec![SocketAddr::new(ip, t.port)],
            None => tokio::net::lookup_host((t.host.as_str(), t.port))
                .await
                .map_err(|e| HttpError::DnsFailed(format!("{}: {e}", t.host)))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(HttpError::DnsFailed(t.host.clone()));
        }
        for a in &addrs {
            if let Err(denied) = self.addresses.check(a.ip(), allow_private) {
                // Scheme, host and port only: the path and query may carry the plugin's secrets.
                tracing::warn!(request_id = %self.request_id, org_id = %self.org, plugin = %self.plugin,
                    scheme = %t.scheme, host = %t.host, port = t.port, address = %denied.ip, allow_private,
                    reason = denied.name(), detail = %denied, "outbound_refused");
                // A DNS name's answers are not the plugin's to learn (they map the operator's
                // network): it hears the reason's name only.
                let message = match t.ip {
                    Some(_) => denied.to_string(),
                    None => format!("{} resolves to a refused address ({})", t.host, denied.name()),
                };
                return Err(HttpError::ForbiddenAddress(message));
            }
        }
        Ok(addrs)
    }

    async fn exchange(&self, t: &Target, addrs: &[SocketAddr], req: OutgoingRequest) -> Result<IncomingResponse, HttpError> {
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
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, stream)
                .await
                .map_err(|e| HttpError::ConnectFailed(format!("TLS: {e}")))?;
            return self.send_over(TokioIo::new(tls), t, req).await;
        }
        self.send_over(TokioIo::new(stream), t, req).await
    }

    /// One HTTP/1.1 exchange over an established (plain or TLS) connection.
    async fn send_over<IO>(&self, io: IO, t: &Target, req: OutgoingRequest) -> Result<IncomingResponse, HttpError>
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
        let cap = self.grants.http_max_response;
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
}

impl Host for HttpState {
    async fn send(&mut self, req: OutgoingRequest) -> Result<IncomingResponse, HttpError> {
        self.send_inner(req).await
    }
}

impl HttpState {
    async fn send_inner(&mut self, req: OutgoingRequest) -> Result<IncomingResponse, HttpError> {
        self.requests += 1;
        if self.requests > MAX_REQUESTS {
            return Err(HttpError::InvalidRequest(format!("more than {MAX_REQUESTS} requests in one invocation")));
        }
        if req.body.len() > MAX_REQUEST_BODY {
            return Err(HttpError::InvalidRequest("request body too large".into()));
        }
        let t = parse_url(&req.url)?;
        let allow_private = most_specific(&self.grants.hosts, &t.scheme, &t.host, t.port)
            .ok_or_else(|| HttpError::NotAllowed(format!("{}://{}:{}", t.scheme, t.host, t.port)))?
            .allow_private;
        let timeout = self.grants.http_timeout;
        let work = async {
            let addrs = self.resolve(&t, allow_private).await?;
            self.exchange(&t, &addrs, req).await
        };
        tokio::time::timeout(timeout, work).await.unwrap_or(Err(HttpError::Timeout))
    }
}
