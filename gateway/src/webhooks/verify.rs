//! Signature checks over the raw body, as bytes, before anything parses it.
//!
//! Every candidate key is tried with a constant-time comparison (`Mac::verify_slice`), and
//! every way of being wrong (missing header, bad encoding, wrong key, tampered body) gives
//! the same answer, so a sender learns nothing about which part failed. Only an authentic
//! Standard Webhooks message outside the replay window is told it is stale.

use base64::Engine;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

/// Standard Webhooks timestamps further than this from now (either way) are refused.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Missing, malformed or not matching any active secret.
    Invalid,
    /// Authentic, but its timestamp is outside the replay window.
    Stale,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

/// Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds), `webhook-signature`
/// (space-separated `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`). Returns the
/// `webhook-id`, the event key.
pub fn standard<'h>(keys: &[&[u8]], headers: &'h HeaderMap, body: &[u8], now: i64) -> Result<&'h str, Rejection> {
    let id = header(headers, "webhook-id").filter(|v| v.len() <= 256).ok_or(Rejection::Invalid)?;
    let ts_text = header(headers, "webhook-timestamp").ok_or(Rejection::Invalid)?;
    let signatures = header(headers, "webhook-signature").ok_or(Rejection::Invalid)?;
    let ts: i64 = ts_text.parse().map_err(|_| Rejection::Invalid)?;
    let candidates: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .take(16)
        .collect();
    let authentic = keys.iter().any(|key| {
        let mut m = mac(key);
        m.update(id.as_bytes());
        m.update(b".");
        m.update(ts_text.as_bytes());
        m.update(b".");
        m.update(body);
        // Every candidate is checked against the finished MAC in constant time.
        candidates.iter().any(|sig| m.clone().verify_slice(sig).is_ok())
    });
    if !authentic {
        return Err(Rejection::Invalid);
    }
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(Rejection::Stale);
    }
    Ok(id)
}

/// A provider's header with the hex HMAC-SHA256 of the raw body (an optional `sha256=`
/// prefix is accepted, as several providers send it).
pub fn hmac_hex(keys: &[&[u8]], headers: &HeaderMap, header_name: &str, body: &[u8]) -> Result<(), Rejection> {
    let value = header(headers, header_name).ok_or(Rejection::Invalid)?;
    let value = value.strip_prefix("sha256=").unwrap_or(value);
    let sig = hex::decode(value).map_err(|_| Rejection::Invalid)?;
    let ok = keys.iter().any(|key| {
        let mut m = mac(key);
        m.update(body);
        m.verify_slice(&sig).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Rejection::Invalid)
    }
}

/// Smartlead's signature header.
pub const SMARTLEAD_SIGNATURE: &str = "x-smartlead-signature";

/// Whether `claimed` equals one of the keys, in time that depends on neither's content.
fn equals_a_key(keys: &[&[u8]], claimed: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    // Every key is compared (no early exit), so timing does not tell which one matched.
    keys.iter().fold(subtle::Choice::from(0), |any, key| any | key.ct_eq(claimed)).into()
}

/// Smartlead documents two proofs, and either suffices: `X-Smartlead-Signature` with the hex
/// HMAC-SHA256 of the raw body (`sha256=` prefix optional), or the top-level `secret_key` of
/// the JSON body equal to the secret. The body is parsed only when the header does not prove
/// the delivery; any failure is the same [`Rejection::Invalid`].
pub fn smartlead(keys: &[&[u8]], headers: &HeaderMap, body: &[u8]) -> Result<(), Rejection> {
    if hmac_hex(keys, headers, SMARTLEAD_SIGNATURE, body).is_ok() {
        return Ok(());
    }
    // An object, read as a map: a derived struct would also take `["<secret>"]` (serde reads
    // structs from sequences), which is not where Smartlead puts it (found by fuzzing).
    let claimed = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body).ok();
    match claimed.as_ref().and_then(|m| m.get("secret_key")?.as_str()) {
        Some(claimed) if !claimed.is_empty() && equals_a_key(keys, claimed.as_bytes()) => Ok(()),
        _ => Err(Rejection::Invalid),
    }
}

/// The `secret` query parameter of the delivery URL (providers that do not sign, such as
/// HeyReach: the token is part of the URL registered there). Tokens the gateway generates are
/// hex, so the value is compared as sent, without percent-decoding.
pub fn url_token(keys: &[&[u8]], query: Option<&str>) -> Result<(), Rejection> {
    let claimed = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("secret="))
        .filter(|v| !v.is_empty())
        .ok_or(Rejection::Invalid)?;
    if equals_a_key(keys, claimed.as_bytes()) {
        Ok(())
    } else {
        Err(Rejection::Invalid)
    }
}

/// Signs like a Standard Webhooks sender (for tests, benchmarks and the docs' examples).
pub fn sign_standard(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
    let mut m = mac(key);
    m.update(format!("{id}.{ts}.").as_bytes());
    m.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes()))
}

/// Signs like an `hmac-sha256` provider: hex HMAC-SHA256 of the body.
pub fn sign_hex(key: &[u8], body: &[u8]) -> String {
    let mut m = mac(key);
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn standard_webhooks_accepts_any_listed_signature_and_any_active_key() {
        let (old, new) = (b"old-key".as_slice(), b"new-key".as_slice());
        let body = br#"{"a":1}"#;
        let sig = sign_standard(old, "msg_1", 1000, body);
        let h = headers(&[("webhook-id", "msg_1"), ("webhook-timestamp", "1000"), ("webhook-signature", &format!("v1,AAAA {sig}"))]);
        assert_eq!(standard(&[new, old], &h, body, 1000), Ok("msg_1"));
        assert_eq!(standard(&[new], &h, body, 1000), Err(Rejection::Invalid));
        assert_eq!(standard(&[old], &h, br#"{"a":2}"#, 1000), Err(Rejection::Invalid));
        assert_eq!(standard(&[old], &h, body, 1000 + TOLERANCE_SECS + 1), Err(Rejection::Stale));
        assert_eq!(standard(&[old], &h, body, 1000 - TOLERANCE_SECS - 1), Err(Rejection::Stale));
        assert_eq!(standard(&[old], &h, body, 1000 + TOLERANCE_SECS), Ok("msg_1"));
        // A stale timestamp with a wrong signature is just invalid: nothing is revealed.
        let bad = headers(&[("webhook-id", "msg_1"), ("webhook-timestamp", "1"), ("webhook-signature", "v1,AAAA")]);
        assert_eq!(standard(&[old], &bad, body, 1000), Err(Rejection::Invalid));
        let missing = headers(&[("webhook-id", "msg_1"), ("webhook-signature", &sig)]);
        assert_eq!(standard(&[old], &missing, body, 1000), Err(Rejection::Invalid));
    }

    #[test]
    fn hmac_hex_checks_the_raw_body() {
        let key = b"provider-secret".as_slice();
        let body = br#"{"id":"m1"}"#;
        let sig = sign_hex(key, body);
        assert_eq!(hmac_hex(&[key], &headers(&[("x-sig", &sig)]), "x-sig", body), Ok(()));
        assert_eq!(hmac_hex(&[key], &headers(&[("x-sig", &format!("sha256={sig}"))]), "x-sig", body), Ok(()));
        assert_eq!(hmac_hex(&[key], &headers(&[("x-sig", &sig)]), "x-sig", b"{}"), Err(Rejection::Invalid));
        assert_eq!(hmac_hex(&[key], &headers(&[("x-sig", "zz")]), "x-sig", body), Err(Rejection::Invalid));
        assert_eq!(hmac_hex(&[key], &headers(&[]), "x-sig", body), Err(Rejection::Invalid));
    }

    #[test]
    fn smartlead_takes_the_signature_header_or_the_body_secret() {
        let (old, new) = (b"old-secret-0123456789".as_slice(), b"new-secret-0123456789".as_slice());
        let body = br#"{"event_type":"EMAIL_REPLY","secret_key":"new-secret-0123456789"}"#;
        // The body's secret alone, against either active key.
        assert_eq!(smartlead(&[old, new], &headers(&[]), body), Ok(()));
        assert_eq!(smartlead(&[old], &headers(&[]), body), Err(Rejection::Invalid));
        // A wrong header does not spoil a right body secret (either proof suffices).
        assert_eq!(smartlead(&[new], &headers(&[(SMARTLEAD_SIGNATURE, "sha256=00")]), body), Ok(()));
        // The header alone, with or without the prefix.
        let unsecret = br#"{"event_type":"EMAIL_OPEN"}"#;
        let sig = sign_hex(old, unsecret);
        assert_eq!(smartlead(&[old], &headers(&[(SMARTLEAD_SIGNATURE, &format!("sha256={sig}"))]), unsecret), Ok(()));
        assert_eq!(smartlead(&[old], &headers(&[(SMARTLEAD_SIGNATURE, &sig)]), unsecret), Ok(()));
        assert_eq!(smartlead(&[new], &headers(&[(SMARTLEAD_SIGNATURE, &sig)]), unsecret), Err(Rejection::Invalid));
        assert_eq!(smartlead(&[old], &headers(&[(SMARTLEAD_SIGNATURE, &sig)]), br#"{"event_type":"EMAIL_CLICK"}"#), Err(Rejection::Invalid));
        // Nothing, a wrong or empty secret, a secret that is a prefix, not JSON, not a string.
        for bad in [&br#"{}"#[..], br#"{"secret_key":""}"#, br#"{"secret_key":"old-secret"}"#, b"nope", br#"{"secret_key":1}"#, br#"[1]"#, br#"["old-secret-0123456789"]"#] {
            assert_eq!(smartlead(&[old], &headers(&[]), bad), Err(Rejection::Invalid), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn url_tokens_match_the_secret_parameter_exactly() {
        let key = b"abc123".as_slice();
        assert_eq!(url_token(&[b"zzz", key], Some("secret=abc123")), Ok(()));
        assert_eq!(url_token(&[key], Some("a=1&secret=abc123&b=2")), Ok(()));
        for bad in [None, Some(""), Some("secret="), Some("secret=abc12"), Some("secret=abc1234"), Some("Secret=abc123"), Some("xsecret=abc123")] {
            assert_eq!(url_token(&[key], bad), Err(Rejection::Invalid), "{bad:?}");
        }
    }
}
