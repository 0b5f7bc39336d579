//! Phase 0: the request head as a whole, before any route is looked up: `Host` (RFC 9112
//! §3.2), the length of the request target and the size of the header section.
//!
//! hyper's own limits sit above these (see `server`), so a request hyper can parse gets a
//! coded answer from here; only one beyond hyper's limits gets hyper's bare 414/431.

use http::request::Parts;
use http::{header, Version};

use crate::error::{ApiError, Code};

/// The longest request target (path and query, or absolute URI) the gateway serves.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The largest header section (every `name: value\r\n`) the gateway serves.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

fn malformed(message: &str) -> ApiError {
    ApiError::new(Code::MalformedRequest, message).with_header("connection", "close")
}

pub fn check(parts: &Parts) -> Result<(), ApiError> {
    let uri = &parts.uri;
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len()) + uri.authority().map_or(0, |a| a.as_str().len());
    if target > MAX_URI_BYTES {
        return Err(ApiError::new(Code::UriTooLong, format!("the request target exceeds {MAX_URI_BYTES} bytes")));
    }
    let section: usize = parts.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if section > MAX_HEADER_BYTES {
        return Err(ApiError::new(Code::HeadersTooLarge, format!("the header section exceeds {MAX_HEADER_BYTES} bytes")));
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if parts.version == Version::HTTP_11 => Err(malformed("HTTP/1.1 requests must carry a Host header")),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(malformed("more than one Host header")),
        (Some(h), None) => {
            // Empty is allowed (a target without an authority); otherwise host[:port], no userinfo.
            let ok = h.is_empty() || (!h.as_bytes().contains(&b'@') && http::uri::Authority::try_from(h.as_bytes()).is_ok());
            if ok {
                Ok(())
            } else {
                Err(malformed("the Host header is not a valid host[:port]"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(version: Version, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().version(version).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn code(r: Result<(), ApiError>) -> Option<&'static str> {
        r.err().map(|e| e.code.as_str())
    }

    #[test]
    fn http11_needs_exactly_one_valid_host() {
        let ok = |h: &[(&str, &str)]| code(check(&parts(Version::HTTP_11, "/x", h)));
        assert_eq!(ok(&[("host", "api.example.com")]), None);
        assert_eq!(ok(&[("host", "127.0.0.1:8080")]), None);
        assert_eq!(ok(&[("host", "[::1]:8080")]), None);
        assert_eq!(ok(&[("host", "")]), None);
        assert_eq!(ok(&[]), Some("MALFORMED_REQUEST"));
        assert_eq!(ok(&[("host", "a"), ("host", "b")]), Some("MALFORMED_REQUEST"));
        assert_eq!(ok(&[("host", "user@evil")]), Some("MALFORMED_REQUEST"));
        assert_eq!(ok(&[("host", "a b")]), Some("MALFORMED_REQUEST"));
        assert_eq!(ok(&[("host", "a/b")]), Some("MALFORMED_REQUEST"));
    }

    #[test]
    fn http10_may_omit_host() {
        assert_eq!(code(check(&parts(Version::HTTP_10, "/x", &[]))), None);
        assert_eq!(code(check(&parts(Version::HTTP_10, "/x", &[("host", "a"), ("host", "b")]))), Some("MALFORMED_REQUEST"));
    }

    #[test]
    fn long_targets_and_large_header_sections_are_coded() {
        let long = format!("/{}", "a".repeat(MAX_URI_BYTES));
        assert_eq!(code(check(&parts(Version::HTTP_11, &long, &[("host", "h")]))), Some("URI_TOO_LONG"));
        let fits = format!("/{}", "a".repeat(MAX_URI_BYTES - 1));
        assert_eq!(code(check(&parts(Version::HTTP_11, &fits, &[("host", "h")]))), None);
        let big = "v".repeat(MAX_HEADER_BYTES);
        assert_eq!(code(check(&parts(Version::HTTP_11, "/", &[("host", "h"), ("x-big", &big)]))), Some("HEADERS_TOO_LARGE"));
    }
}
