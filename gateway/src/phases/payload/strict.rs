//! The one parse of a JSON request body: `serde_json`'s grammar, limits and positions, into a
//! `serde_json::Value`, with two more refusals made while the value is built:
//!
//! - a duplicate key in an object: `serde_json::Value` would keep the last, so
//!   `{"org_id": mine, "org_id": other}` would show the tenant check one `org_id` and a
//!   plugin parsing the same bytes with a first-wins parser the other;
//! - U+0000 in a string or key: PostgreSQL cannot store it in `text` or `jsonb`, so it would
//!   fail later, as a 5xx, deep in a handler or plugin.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not JSON (or trailing bytes, or nested deeper than `serde_json`'s limit of 128).
    Syntax,
    /// This key appears twice in one object.
    DuplicateKey(String),
    /// A string or key contains U+0000.
    Nul,
}

/// A refused body, with the position `serde_json` reports (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub refusal: Refusal,
    pub line: usize,
    pub column: usize,
}

pub fn parse(body: &[u8]) -> Result<Value, Refused> {
    // The visitor cannot hand a typed error through serde's error type: it leaves the reason
    // here and returns serde_json's error, which carries the position.
    let reason = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Strict { reason: &reason }.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| Refused { refusal: reason.take().unwrap_or(Refusal::Syntax), line: e.line(), column: e.column() })
}

#[derive(Clone, Copy)]
struct Strict<'a> {
    reason: &'a Cell<Option<Refusal>>,
}

impl Strict<'_> {
    fn refuse<E: de::Error>(self, r: Refusal) -> E {
        let message = match &r {
            Refusal::DuplicateKey(_) => "duplicate key",
            _ => "U+0000 in a string",
        };
        self.reason.set(Some(r));
        E::custom(message)
    }

    fn text<E: de::Error>(self, s: &str) -> Result<(), E> {
        if s.contains('\0') {
            return Err(self.refuse(Refusal::Nul));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As `serde_json::Value` does (its parser never yields a non-finite number).
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.text(v)?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.text(&v)?;
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key_seed(Key(self))? {
            // Refused before its value is read, so the position points at the second key.
            if object.contains_key(&key) {
                return Err(self.refuse(Refusal::DuplicateKey(key)));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// An object key: a string without U+0000.
struct Key<'a>(Strict<'a>);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.0.text(v)?;
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        self.0.text(&v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> Refused {
        parse(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn accepts_what_serde_json_accepts_and_builds_the_same_value() {
        for body in [
            r#"{"a": [1, -2, 3.5, 1e300, 18446744073709551615, true, null, "x\n\u00e9"], "b": {"c": {}}}"#,
            "  [] ",
            r#""plain""#,
            "0",
            r#"{"a": {"k": 1}, "b": {"k": 2}}"#,
            r#"{"\u0001": "\u001f", "nul-looking": "\\u0000"}"#,
        ] {
            assert_eq!(parse(body.as_bytes()).unwrap(), serde_json::from_str::<Value>(body).unwrap(), "{body}");
        }
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth_pointing_at_the_second() {
        let r = refusal(r#"{"org_id": "a", "org_id": "b"}"#);
        assert_eq!(r.refusal, Refusal::DuplicateKey("org_id".into()));
        assert_eq!(r.line, 1);
        assert!((18..=26).contains(&r.column), "points at the second key: {r:?}");
        let r = refusal("{\"x\": [{\"k\": 1,\n \"k\": 2}]}");
        assert_eq!(r.refusal, Refusal::DuplicateKey("k".into()));
        assert_eq!(r.line, 2);
        // The same key spelled with an escape is the same key.
        assert_eq!(refusal(r#"{"org_id": 1, "org\u005fid": 2}"#).refusal, Refusal::DuplicateKey("org_id".into()));
    }

    #[test]
    fn refuses_nul_in_strings_and_keys_escaped_or_not() {
        assert_eq!(refusal(r#"{"name": "a\u0000b"}"#).refusal, Refusal::Nul);
        assert_eq!(refusal(r#"{"a\u0000": 1}"#).refusal, Refusal::Nul);
        assert_eq!(refusal(r#"["ok", ["\u0000"]]"#).refusal, Refusal::Nul);
        // A raw NUL byte inside a string is a control character JSON forbids: a syntax error.
        assert_eq!(parse(b"{\"a\": \"x\0\"}").unwrap_err().refusal, Refusal::Syntax);
    }

    #[test]
    fn syntax_errors_keep_serde_jsons_position() {
        for body in ["{", "{\"a\": 1} x", "[1,]", "", "\u{feff}{}", "{\"a\" 1}"] {
            let ours = parse(body.as_bytes()).unwrap_err();
            let theirs = serde_json::from_str::<Value>(body).unwrap_err();
            assert_eq!(ours, Refused { refusal: Refusal::Syntax, line: theirs.line(), column: theirs.column() }, "{body:?}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(parse(deep.as_bytes()).unwrap_err().refusal, Refusal::Syntax);
    }
}
