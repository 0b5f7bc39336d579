//! Outbound destinations a route grants (`grants.hosts`): `scheme://host[:port]`, where the
//! host may be `*`, `*.domain` or exact and the port `*`. Kept next to `outbound_http`, the one
//! capability that uses them.

/// One allowed outbound destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub scheme: String,
    /// `*` (any), `*.example.com` (subdomains) or an exact host.
    pub host: String,
    /// `None` = any port.
    pub port: Option<u16>,
}

impl HostPattern {
    pub fn parse(s: &str) -> std::result::Result<HostPattern, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| format!("host {s:?}: expected scheme://host[:port]"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("host {s:?}: scheme must be http or https"));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.is_empty() {
            return Err(format!("host {s:?}: no path allowed"));
        }
        let (host, port) = if let Some(h) = rest.strip_prefix('[') {
            let (h, after) = h.split_once(']').ok_or_else(|| format!("host {s:?}: bad IPv6 literal"))?;
            (format!("[{h}]"), after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = match port {
            None => Some(default_port),
            Some("*") => None,
            Some(p) => Some(p.parse().map_err(|_| format!("host {s:?}: bad port {p:?}"))?),
        };
        let host = host.to_ascii_lowercase();
        if host != "*" && host[host.starts_with("*.") as usize * 2..].contains('*') {
            return Err(format!("host {s:?}: wildcards only as `*` or a leading `*.`"));
        }
        Ok(HostPattern { scheme: scheme.to_string(), host, port })
    }

    /// Whether a wildcard is involved (private addresses need an exact host).
    pub fn is_exact(&self) -> bool {
        !self.host.contains('*')
    }

    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme != scheme || self.port.is_some_and(|p| p != port) {
            return false;
        }
        match self.host.as_str() {
            "*" => true,
            h if h.starts_with("*.") => host.ends_with(&h[1..]) && host.len() > h.len() - 1,
            h => h == host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let p = HostPattern::parse("https://api.example.com").unwrap();
        assert!(p.matches("https", "api.example.com", 443));
        assert!(!p.matches("https", "api.example.com", 8443));
        assert!(!p.matches("http", "api.example.com", 443));
        let w = HostPattern::parse("https://*.example.com:*").unwrap();
        assert!(w.matches("https", "a.b.example.com", 1));
        assert!(!w.matches("https", "example.com", 443));
        assert!(!w.matches("https", "evilexample.com", 443));
        assert!(!w.is_exact());
        let l = HostPattern::parse("http://127.0.0.1:*").unwrap();
        assert!(l.is_exact() && l.matches("http", "127.0.0.1", 9));
        let v6 = HostPattern::parse("http://[::1]:8080").unwrap();
        assert!(v6.matches("http", "[::1]", 8080));
        assert!(HostPattern::parse("ftp://x").is_err());
        assert!(HostPattern::parse("https://a.*.com").is_err());
        assert!(HostPattern::parse("https://x/path").is_err());
    }
}
