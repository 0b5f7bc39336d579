//! Path patterns (`/v1/orgs/{org_id}/tokens`, `{*rest}` tails) and looking a request up.

use super::{PolicySet, Route};

/// One segment of a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// `{*name}`: the rest of the path, possibly empty; last segment only.
    Tail(String),
}

/// A path pattern such as `/v1/admin/orgs/{org_id}/tokens`.
#[derive(Debug, Clone)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

impl PathPattern {
    pub fn parse(p: &str) -> std::result::Result<PathPattern, String> {
        if !p.starts_with('/') {
            return Err(format!("path {p:?} must start with /"));
        }
        let parts: Vec<&str> = p[1..].split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = if let Some(inner) = part.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if let Some(name) = inner.strip_prefix('*') {
                    if i + 1 != parts.len() {
                        return Err(format!("path {p:?}: {{*{name}}} must be last"));
                    }
                    Segment::Tail(name.to_string())
                } else if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("path {p:?}: bad parameter name {inner:?}"));
                } else {
                    Segment::Param(inner.to_string())
                }
            } else if part.contains(['{', '}']) {
                return Err(format!("path {p:?}: braces only around a whole segment"));
            } else {
                Segment::Literal(part.to_string())
            };
            segments.push(seg);
        }
        Ok(PathPattern { segments })
    }

    /// Matches `path`, returning the named parameters.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let mut rest = path.strip_prefix('/')?;
        let mut params = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            let (part, next) = match seg {
                Segment::Tail(name) => {
                    params.push((name.clone(), rest.to_string()));
                    return Some(params);
                }
                _ => match rest.split_once('/') {
                    Some((part, next)) => (part, Some(next)),
                    None => (rest, None),
                },
            };
            match seg {
                Segment::Literal(l) if part != l => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => params.push((name.clone(), part.to_string())),
                _ => {}
            }
            match next {
                Some(n) => rest = n,
                None => {
                    return match self.segments.get(i + 1) {
                        None => Some(params),
                        Some(Segment::Tail(name)) => {
                            params.push((name.clone(), String::new()));
                            Some(params)
                        }
                        Some(_) => None,
                    }
                }
            }
        }
        None
    }
}

/// The result of looking a request up.
pub enum Lookup<'a> {
    Found(&'a Route, Vec<(String, String)>),
    /// The path exists, with other methods.
    WrongMethod,
    NotFound,
}

impl PolicySet {
    pub fn lookup(&self, method: &http::Method, path: &str) -> Lookup<'_> {
        let mut path_seen = false;
        for r in self.routes.iter().filter(|r| !r.internal) {
            if let Some(params) = r.pattern.matches(path) {
                if r.method == *method {
                    return Lookup::Found(r, params);
                }
                path_seen = true;
            }
        }
        if path_seen {
            Lookup::WrongMethod
        } else {
            Lookup::NotFound
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_params_and_tails() {
        let p = PathPattern::parse("/v1/orgs/{org_id}/tokens").unwrap();
        assert_eq!(p.matches("/v1/orgs/abc/tokens").unwrap(), vec![("org_id".into(), "abc".into())]);
        assert!(p.matches("/v1/orgs//tokens").is_none());
        assert!(p.matches("/v1/orgs/abc/tokens/x").is_none());
        let t = PathPattern::parse("/v1/auth/tokens/{*rest}").unwrap();
        assert_eq!(t.matches("/v1/auth/tokens/a/b").unwrap()[0].1, "a/b");
        assert!(PathPattern::parse("/a/{*x}/b").is_err());
    }
}
