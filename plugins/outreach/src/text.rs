//! Pure text helpers: what providers send is parsed defensively (numbers or strings, missing
//! fields), and what goes into the database is cut to the columns' limits first, so that a
//! long provider answer can never abort the invocation's transaction.

use gateway_plugin_sdk::serde_json::Value as J;

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A string, or a number as its text (providers send ids both ways); `None` for anything else
/// and for an empty string.
pub fn id_text(v: Option<&J>) -> Option<String> {
    match v? {
        J::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        J::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A non-empty string field.
pub fn text(v: Option<&J>) -> Option<String> {
    match v? {
        J::String(s) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// The value at the first JSON pointer that holds something.
pub fn first<'a>(body: &'a J, pointers: &[&str]) -> Option<&'a J> {
    pointers.iter().filter_map(|p| body.pointer(p)).find(|v| !v.is_null())
}

/// A provider id as JSON: a number when it is one (HeyReach wants integers), else a string.
pub fn id_json(id: &str) -> J {
    id.parse::<i64>().map(J::from).unwrap_or_else(|_| J::String(id.to_string()))
}

/// The normalised email (trimmed, lower-case) when `s` looks like one.
pub fn email(s: &str) -> Option<String> {
    let e = s.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    let ok = !local.is_empty()
        && e.len() <= 254
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !e.contains(char::is_whitespace);
    ok.then_some(e)
}

/// `s` when it is an RFC 3339 timestamp the database will take (`2024-05-01T10:00:00Z`,
/// fractions and offsets allowed; a space for `T` too); anything else would abort the
/// transaction, so the caller falls back to the time of processing.
pub fn timestamp(s: &str) -> Option<String> {
    let b = s.trim().as_bytes();
    if b.len() < 19 || b.len() > 40 {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shape = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't' | b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return None;
    }
    let num = |r: std::ops::Range<usize>| std::str::from_utf8(&b[r]).ok()?.parse::<u32>().ok();
    let (mo, d, h, mi, se) = (num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(r) = rest.strip_prefix(b".") {
        let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &r[n..];
    }
    let zone = match rest {
        [] | [b'Z'] | [b'z'] => true,
        [s, h1, h2, b':', m1, m2] | [s, h1, h2, m1, m2] => {
            matches!(s, b'+' | b'-') && [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
        }
        _ => false,
    };
    zone.then(|| s.trim().to_string())
}

/// `s` percent-encoded for a query value (RFC 3986 unreserved characters kept).
pub fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A short, printable reason from a provider's refusal: its JSON `message` / `error` / `msg`
/// (or the start of the body), one line, at most 120 bytes.
pub fn reason(body: &[u8]) -> String {
    let from_json = gateway_plugin_sdk::serde_json::from_slice::<J>(body).ok().and_then(|j| {
        ["/message", "/error/message", "/error", "/msg", "/detail", "/title"]
            .iter()
            .find_map(|p| j.pointer(p).and_then(J::as_str).map(str::to_string))
    });
    let raw = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let one_line: String = raw.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    cut(one_line.split_whitespace().collect::<Vec<_>>().join(" ").as_str(), 120)
}

/// The forms a LinkedIn profile URL may be stored under (as given; without, or with, a
/// trailing slash; and those in lower case): a webhook's `linkedInUrl` is matched against each.
pub fn profile_url_forms(url: &str) -> Vec<String> {
    let u = url.trim();
    let bare = u.trim_end_matches('/');
    let lower = bare.to_lowercase();
    let mut out = vec![u.to_string()];
    for f in [bare.to_string(), format!("{bare}/"), lower.clone(), format!("{lower}/")] {
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

/// The CRM identity of a LinkedIn profile: `linkedin:` and the URL in lower case, without a
/// trailing slash (profile URLs are case-insensitive).
pub fn linkedin_identity(url: &str) -> String {
    cut(&format!("linkedin:{}", url.trim().trim_end_matches('/').to_lowercase()), 320)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_plugin_sdk::serde_json::json;

    #[test]
    fn cut_keeps_char_boundaries() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
    }

    #[test]
    fn ids_come_as_numbers_or_strings() {
        assert_eq!(id_text(Some(&json!(42))), Some("42".into()));
        assert_eq!(id_text(Some(&json!(" 7a "))), Some("7a".into()));
        assert_eq!(id_text(Some(&json!(""))), None);
        assert_eq!(id_text(Some(&json!(null))), None);
        assert_eq!(id_json("12"), json!(12));
        assert_eq!(id_json("x12"), json!("x12"));
    }

    #[test]
    fn timestamps_the_database_takes() {
        for ok in ["2024-05-01T10:00:00Z", "2024-05-01T10:00:00.123Z", "2024-05-01 10:00:00+02:00", "2024-05-01T10:00:00", "2024-05-01T10:00:00.5-0530"] {
            assert_eq!(timestamp(ok).as_deref(), Some(ok), "{ok}");
        }
        for bad in ["", "yesterday", "2024-13-01T10:00:00Z", "2024-05-01T25:00:00Z", "2024-05-01T10:00:00.Z", "2024-05-01T10:00:00 UTC", "1714557600"] {
            assert_eq!(timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn emails_are_normalised() {
        assert_eq!(email(" Ann@Example.COM "), Some("ann@example.com".into()));
        assert_eq!(email("nope"), None);
        assert_eq!(email("a@b"), None);
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_value("a+b@x.io"), "a%2Bb%40x.io");
        assert_eq!(query_value("plain-1_~."), "plain-1_~.");
    }

    #[test]
    fn reasons_are_short_single_lines() {
        assert_eq!(reason(br#"{"message":"Campaign not\nfound"}"#), "Campaign not found");
        assert_eq!(reason(br#"{"error":"bad"}"#), "bad");
        assert_eq!(reason(b"plain text"), "plain text");
        assert_eq!(reason(&[b'x'; 500]).len(), 120);
    }

    #[test]
    fn profile_urls_match_with_or_without_slash() {
        assert_eq!(profile_url_forms("https://linkedin.com/in/a/"), vec!["https://linkedin.com/in/a/", "https://linkedin.com/in/a"]);
        assert_eq!(profile_url_forms("https://linkedin.com/in/a"), vec!["https://linkedin.com/in/a", "https://linkedin.com/in/a/"]);
        assert_eq!(profile_url_forms("https://linkedin.com/in/Ann").len(), 4);
        assert_eq!(linkedin_identity(" https://LinkedIn.com/in/Ann/ "), "linkedin:https://linkedin.com/in/ann");
    }
}
