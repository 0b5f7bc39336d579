//! Outbound destinations a route grants (`grants.hosts`): `scheme://host[:port]`, where the
//! host may be `*`, `*.domain`, a DNS name or an IP literal and the port `*`. Kept next to
//! `outbound_http`, the one capability that uses them.
//!
//! A pattern only says which URLs a plugin may ask for; the address a request connects to is
//! checked separately (`addr::AddressPolicy`), for every pattern. The one thing a pattern adds
//! to that check is `allow_private`, and only an IP-literal pattern may carry it: a DNS name's
//! answers are chosen by whoever controls its zone, and a wildcard names nobody in particular.
//!
//! When several patterns match a URL, the most specific one decides, whatever the order they
//! are written in: an exact host beats the longest `*.suffix`, which beats `*`; then an exact
//! port beats `*`. So `{ url = "http://10.0.0.5:8080", allow_private = true }` keeps its opt-in
//! next to `"http://*:*"`, and `"http://*:*"` never lends anything to `10.0.0.6`.

use std::fmt;
use std::net::IpAddr;

use super::addr::{classify, Class, METADATA_ENDPOINTS};

/// The host part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `*`: any host.
    Any,
    /// `*.example.com`, stored as `.example.com`: any name below it (not the domain itself,
    /// never an IP literal).
    Suffix(String),
    /// An exact DNS name, lower-case.
    Name(String),
    /// An IP literal (`10.0.0.5`, `[fd00::5]`), compared by value.
    Ip(IpAddr),
}

/// One allowed outbound destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub scheme: String,
    pub host: Host,
    /// `None` = any port.
    pub port: Option<u16>,
    /// The policy's opt-in to private-network addresses (IP-literal patterns only).
    pub allow_private: bool,
}

impl HostPattern {
    /// A pattern without the private opt-in.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
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
            let ip: std::net::Ipv6Addr = h.parse().map_err(|_| format!("host {s:?}: bad IPv6 literal"))?;
            let port = match after {
                "" => None,
                a => Some(a.strip_prefix(':').ok_or_else(|| format!("host {s:?}: expected :port after ]"))?),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (h, port) = match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            let h = h.to_ascii_lowercase();
            let host = if h.is_empty() {
                return Err(format!("host {s:?}: no host"));
            } else if h == "*" {
                Host::Any
            } else if let Some(suffix) = h.strip_prefix("*.") {
                if suffix.is_empty() || suffix.contains('*') {
                    return Err(format!("host {s:?}: wildcards only as `*` or a leading `*.`"));
                }
                Host::Suffix(format!(".{suffix}"))
            } else if h.contains('*') {
                return Err(format!("host {s:?}: wildcards only as `*` or a leading `*.`"));
            } else if let Ok(ip) = h.parse::<std::net::Ipv4Addr>() {
                Host::Ip(IpAddr::V4(ip))
            } else {
                Host::Name(h)
            };
            (host, port)
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = match port {
            None => Some(default_port),
            Some("*") => None,
            Some(p) => Some(p.parse().map_err(|_| format!("host {s:?}: bad port {p:?}"))?),
        };
        Ok(HostPattern { scheme: scheme.to_string(), host, port, allow_private: false })
    }

    /// A pattern with the private opt-in, refused unless the host is an IP literal in a block
    /// the opt-in can open (a private network, or loopback for the operator's
    /// `GATEWAY_OUTBOUND_ALLOW_LOOPBACK`).
    pub fn parse_private(s: &str) -> Result<HostPattern, String> {
        let mut p = HostPattern::parse(s)?;
        let ip = match &p.host {
            Host::Ip(ip) => *ip,
            Host::Name(_) => {
                return Err(format!(
                    "host {s:?}: allow_private is only for an IP-literal pattern (a DNS name's answers are \
                     chosen by whoever controls its zone); write the private address, e.g. \"http://10.0.0.5:8080\""
                ))
            }
            Host::Any | Host::Suffix(_) => {
                return Err(format!(
                    "host {s:?}: allow_private is only for an IP-literal pattern, never a wildcard; \
                     write the private address, e.g. \"http://10.0.0.5:8080\""
                ))
            }
        };
        if METADATA_ENDPOINTS.contains(&ip) {
            return Err(format!("host {s:?}: {ip} is a cloud metadata endpoint, which allow_private cannot open"));
        }
        match classify(ip) {
            Class::Special(r) if r.is_private_network() || r.is_loopback() => {}
            Class::Global => return Err(format!("host {s:?}: {ip} is a global address; allow_private is not needed")),
            c => {
                return Err(format!(
                    "host {s:?}: {ip} is {c}; allow_private opens only private networks \
                     (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7)"
                ))
            }
        }
        p.allow_private = true;
        Ok(p)
    }

    /// Whether the pattern admits this URL; `host` is lower-case, IPv6 literals in brackets.
    pub fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme != scheme || self.port.is_some_and(|p| p != port) {
            return false;
        }
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).parse::<IpAddr>().ok();
        match &self.host {
            Host::Any => true,
            Host::Suffix(s) => literal.is_none() && host.len() > s.len() && host.ends_with(s.as_str()),
            Host::Name(n) => literal.is_none() && n == host,
            Host::Ip(ip) => literal == Some(*ip),
        }
    }

    /// Orders matching patterns: exact host > longer `*.suffix` > `*`, then exact port > any.
    fn specificity(&self) -> (u8, usize, bool) {
        let (rank, len) = match &self.host {
            Host::Any => (0, 0),
            Host::Suffix(s) => (1, s.len()),
            Host::Name(_) | Host::Ip(_) => (2, 0),
        };
        (rank, len, self.port.is_some())
    }

    /// Whether two patterns name the same destinations (which would leave the winner to
    /// the order they are written in).
    pub fn same_destinations(&self, other: &HostPattern) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }
}

/// The most specific pattern admitting the URL, if any. Patterns that tie are
/// [`HostPattern::same_destinations`], which policy loading refuses.
pub fn most_specific<'a>(patterns: &'a [HostPattern], scheme: &str, host: &str, port: u16) -> Option<&'a HostPattern> {
    patterns.iter().filter(|p| p.matches(scheme, host, port)).max_by_key(|p| p.specificity())
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        match &self.host {
            Host::Any => f.write_str("*")?,
            Host::Suffix(s) => write!(f, "*{s}")?,
            Host::Name(n) => f.write_str(n)?,
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}")?,
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => f.write_str(":*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn host_patterns() {
        let p1 = p("https://api.example.com");
        assert!(p1.matches("https", "api.example.com", 443));
        assert!(!p1.matches("https", "api.example.com", 8443));
        assert!(!p1.matches("http", "api.example.com", 443));
        let w = p("https://*.example.com:*");
        assert!(w.matches("https", "a.b.example.com", 1));
        assert!(!w.matches("https", "example.com", 443));
        assert!(!w.matches("https", "evilexample.com", 443));
        let l = p("http://127.0.0.1:*");
        assert_eq!(l.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert!(l.matches("http", "127.0.0.1", 9));
        let v6 = p("http://[::1]:8080");
        assert!(v6.matches("http", "[::1]", 8080));
        // IP literals compare by value, not by spelling.
        assert!(v6.matches("http", "[0:0::1]", 8080));
        assert!(p("http://[FD00::5]").matches("http", "[fd00:0::5]", 80));
        assert!(HostPattern::parse("ftp://x").is_err());
        assert!(HostPattern::parse("https://a.*.com").is_err());
        assert!(HostPattern::parse("https://*.").is_err());
        assert!(HostPattern::parse("https://x/path").is_err());
        assert!(HostPattern::parse("https://:443").is_err());
        assert!(HostPattern::parse("https://[::1").is_err());
        assert!(HostPattern::parse("https://[nope]").is_err());
        assert!(HostPattern::parse("https://[::1]x").is_err());
        assert!(HostPattern::parse("https://x:port").is_err());
        assert_eq!(p("https://API.Example.com:*").to_string(), "https://api.example.com:*");
        assert_eq!(p("http://[::1]").to_string(), "http://[::1]:80");
    }

    /// A name pattern never admits an IP literal, nor a suffix pattern one that ends like it.
    #[test]
    fn names_and_suffixes_never_match_ip_literals() {
        assert!(!p("http://*.0.0.1:*").matches("http", "127.0.0.1", 80));
        assert!(!p("http://*.1]:*").matches("http", "[::1]", 80));
        assert!(p("http://*:*").matches("http", "127.0.0.1", 80));
        assert!(p("http://*:*").matches("http", "[::1]", 80));
    }

    fn winner(ps: &[HostPattern], url: (&str, &str, u16)) -> Option<String> {
        most_specific(ps, url.0, url.1, url.2).map(|p| p.to_string())
    }

    #[test]
    fn the_most_specific_pattern_wins_in_any_order() {
        let written = [
            "https://*:*",
            "https://*.example.com:*",
            "https://*.api.example.com:*",
            "https://*.api.example.com:8443",
            "https://v1.api.example.com:*",
            "https://v1.api.example.com",
        ];
        let cases = [
            (("https", "v1.api.example.com", 443), "https://v1.api.example.com:443"),
            (("https", "v1.api.example.com", 8443), "https://v1.api.example.com:*"),
            (("https", "v2.api.example.com", 8443), "https://*.api.example.com:8443"),
            (("https", "v2.api.example.com", 443), "https://*.api.example.com:*"),
            (("https", "www.example.com", 443), "https://*.example.com:*"),
            (("https", "example.com", 443), "https://*:*"),
            (("https", "10.0.0.5", 443), "https://*:*"),
        ];
        let forward: Vec<_> = written.iter().map(|s| p(s)).collect();
        let mut backward = forward.clone();
        backward.reverse();
        for (url, want) in cases {
            assert_eq!(winner(&forward, url).as_deref(), Some(want), "{url:?}");
            assert_eq!(winner(&backward, url).as_deref(), Some(want), "{url:?}");
        }
        assert_eq!(winner(&forward, ("http", "v1.api.example.com", 443)), None);
    }

    /// The winner's allow_private applies: a wildcard written first lends nothing to the IP
    /// literal, and the literal's opt-in does not spread to its neighbours.
    #[test]
    fn allow_private_comes_from_the_winner() {
        for ps in [
            vec![p("http://*:*"), HostPattern::parse_private("http://10.0.0.5:8080").unwrap()],
            vec![HostPattern::parse_private("http://10.0.0.5:8080").unwrap(), p("http://*:*")],
        ] {
            assert!(most_specific(&ps, "http", "10.0.0.5", 8080).unwrap().allow_private);
            assert!(!most_specific(&ps, "http", "10.0.0.5", 8081).unwrap().allow_private);
            assert!(!most_specific(&ps, "http", "10.0.0.6", 8080).unwrap().allow_private);
        }
    }

    #[test]
    fn allow_private_only_on_private_ip_literals() {
        for ok in ["http://10.0.0.5:8080", "https://192.168.1.1", "http://172.16.0.1:*", "http://100.64.0.1", "http://[fd00::5]:80", "http://127.0.0.1:*", "http://[::1]:*"] {
            let pat = HostPattern::parse_private(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(pat.allow_private, "{ok}");
        }
        let refused = [
            ("https://internal.example.com", "IP-literal"),
            ("http://localhost:8080", "IP-literal"),
            ("http://*:*", "never a wildcard"),
            ("http://*.corp.example:*", "never a wildcard"),
            ("http://8.8.8.8", "global address; allow_private is not needed"),
            ("http://169.254.169.254", "link-local"),
            ("http://[fe80::1]", "link-local"),
            ("http://0.0.0.0:80", "unspecified"),
            ("http://[::ffff:10.0.0.5]:80", "ipv4-mapped"),
            ("http://[64:ff9b::a00:5]:80", "nat64"),
            ("http://100.100.100.200", "cloud metadata endpoint"),
            ("http://[fd00:ec2::254]", "cloud metadata endpoint"),
            ("http://224.0.0.1", "multicast"),
        ];
        for (s, why) in refused {
            let e = HostPattern::parse_private(s).unwrap_err();
            assert!(e.contains(why) && e.contains(s), "{s}: {e}");
        }
    }
}
