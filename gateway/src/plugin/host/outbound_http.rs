//! `outbound-http`: allowlist first, then DNS, then an address check, then one HTTP/1.1
//! exchange (TLS for `https://`, verified against the web PKI roots plus any configured
//! extra CA) on a connection to the address we checked, so a second DNS answer cannot swap in
//! a private address. Redirects are returned to the plugin, never followed.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use wasmtime::component::HasData;

use crate::plugin::bindings::outbound_http::{HttpError, Host, IncomingResponse, OutgoingRequest};
use crate::plugin::bindings::types::Header;
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

/// Addresses a plugin may not reach unless the policy names the exact host.
pub fn is_restricted(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10, carrier-grade NAT
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_restricted(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        }
    }
}

struct Target {
    scheme: String,
    host: String,
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
    Ok(Target { scheme: scheme.to_string(), host, port, path })
}

impl HttpState {
    async fn resolve(&self, t: &Target, exact: bool) -> Result<Vec<SocketAddr>, HttpError> {
        let literal = t.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, t.port)],
            Err(_) => tokio::net::lookup_host((t.host.as_str(), t.port))
                .await
                .map_err(|e| HttpError::DnsFailed(format!("{}: {e}", t.host)))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(HttpError::DnsFailed(t.host.clone()));
        }
        // Any restricted answer refuses the whole name: a name that mixes public and private
        // addresses is how rebinding attacks start.
        if !exact && addrs.iter().any(|a| is_restricted(a.ip())) {
            return Err(HttpError::ForbiddenAddress(t.host.clone()));
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
            let literal = t.host.trim_start_matches('[').trim_end_matches(']');
            let name = match literal.parse::<IpAddr>() {
                Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
                Err(_) => rustls::pki_types::ServerName::try_from(t.host.clone())
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
        let pattern = self
            .grants
            .hosts
            .iter()
            .find(|p| p.matches(&t.scheme, &t.host, t.port))
            .ok_or_else(|| HttpError::NotAllowed(format!("{}://{}:{}", t.scheme, t.host, t.port)))?;
        let exact = pattern.is_exact();
        let timeout = self.grants.http_timeout;
        let work = async {
            let addrs = self.resolve(&t, exact).await?;
            self.exchange(&t, &addrs, req).await
        };
        tokio::time::timeout(timeout, work).await.unwrap_or(Err(HttpError::Timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restricted_addresses() {
        for ip in ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "0.0.0.0", "224.0.0.1",
                   "100.64.0.1", "::1", "::", "fd00::1", "fe80::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.1.2.3"] {
            assert!(is_restricted(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_restricted(ip.parse().unwrap()), "{ip}");
        }
    }
}
