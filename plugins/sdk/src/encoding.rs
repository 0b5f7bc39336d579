//! Text forms plugins need without pulling in a crate for each: lower-case hex and the
//! canonical UUID shape.

/// `bytes` as lower-case hex, two digits per byte (e.g. a SHA-256 digest as 64 characters).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Whether `s` has the hyphenated 8-4-4-4-12 shape of a UUID (hex digits of either case).
/// Check a path or query parameter with it before binding it as a [`crate::db::Value::uuid`]:
/// the database refuses a malformed UUID, and a database error aborts the invocation.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| if matches!(i, 8 | 13 | 18 | 23) { b == b'-' } else { b.is_ascii_hexdigit() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_two_digits_per_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn uuid_shape() {
        assert!(is_uuid("00000000-0000-0000-0000-000000000000"));
        assert!(is_uuid("A0B1C2D3-e4f5-6789-abcd-EF0123456789"));
        assert!(!is_uuid("00000000000000000000000000000000"));
        assert!(!is_uuid("00000000-0000-0000-0000-00000000000"));
        assert!(!is_uuid("0000000g-0000-0000-0000-000000000000"));
        assert!(!is_uuid("00000000-0000-0000-0000-0000000000000"));
        assert!(!is_uuid("{0000000-0000-0000-0000-000000000000}"));
    }
}
