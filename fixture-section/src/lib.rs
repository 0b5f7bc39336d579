//! The `gateway:fixtures` custom section of a WebAssembly binary: where a plugin's contract
//! fixtures travel with its bytes (the format of the payload is in `docs/plugins.md`).
//!
//! One reader and one writer, shared by `cargo xtask plugins` (which embeds each plugin's
//! `fixtures.json`) and the gateway (which reads fixtures on upload and embeds them for
//! `gateway plugin push|check --fixtures`). This crate only moves bytes: it neither parses
//! nor validates the payload.
//!
//! A binary (core module or component, which share the layout this crate needs) is an
//! 8-byte preamble (`\0asm` and a version) followed by sections, each one byte of id, a
//! LEB128 `u32` size and that many bytes of contents. Custom sections have id 0 and start
//! with their name (a LEB128 length and UTF-8 bytes); wasmtime ignores them, so a component
//! runs the same with or without fixtures.
//!
//! ```
//! let component = b"\0asm\x0d\0\x01\0"; // an empty component
//! let with = fixture_section::embed(component, b"[]").unwrap();
//! assert_eq!(fixture_section::extract(&with).unwrap(), Some(&b"[]"[..]));
//! assert_eq!(fixture_section::extract(component).unwrap(), None);
//! ```

use std::fmt;
use std::ops::Range;

/// The name of the custom section that carries fixtures.
pub const SECTION: &str = "gateway:fixtures";

/// Why bytes could not be read or written as a WebAssembly binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The bytes do not start with the WebAssembly preamble (`\0asm` and a 4-byte version).
    NotWasm,
    /// A section runs past the end of the bytes, or a size is not a LEB128 `u32`; `offset`
    /// is where the bad section starts.
    Malformed { offset: usize },
    /// More than one [`SECTION`] section: which one counts would be a guess.
    Duplicate,
    /// The payload makes the section larger than a section can be (4 GiB).
    TooLarge,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotWasm => f.write_str("not a WebAssembly binary"),
            Error::Malformed { offset } => write!(f, "malformed WebAssembly binary (section at byte {offset})"),
            Error::Duplicate => f.write_str("more than one custom section of that name"),
            Error::TooLarge => f.write_str("custom section too large"),
        }
    }
}

impl std::error::Error for Error {}

/// The length of the preamble: magic number and version.
const PREAMBLE: usize = 8;

/// One top-level section: `whole` spans id, size and contents; `contents` just the contents.
struct Section {
    id: u8,
    whole: Range<usize>,
    contents: Range<usize>,
}

/// Every top-level section of `bytes`, in order.
fn sections(bytes: &[u8]) -> Result<Vec<Section>, Error> {
    if bytes.len() < PREAMBLE || &bytes[..4] != b"\0asm" {
        return Err(Error::NotWasm);
    }
    let mut out = Vec::new();
    let mut at = PREAMBLE;
    while at < bytes.len() {
        let malformed = Error::Malformed { offset: at };
        let id = bytes[at];
        let (size, leb_len) = read_leb_u32(&bytes[at + 1..]).ok_or(malformed.clone())?;
        let start = at + 1 + leb_len;
        let end = start.checked_add(size as usize).filter(|&e| e <= bytes.len()).ok_or(malformed)?;
        out.push(Section { id, whole: at..end, contents: start..end });
        at = end;
    }
    Ok(out)
}

/// Whether `contents` (of a section with id 0) is a custom section named `section`; if so,
/// where its payload starts within `contents`.
fn ours(contents: &[u8], section: &str) -> Option<usize> {
    let (len, leb_len) = read_leb_u32(contents)?;
    let name = contents.get(leb_len..)?.get(..len as usize)?;
    (name == section.as_bytes()).then_some(leb_len + name.len())
}

/// The payload of `bytes`' [`SECTION`] custom section: `Ok(None)` when there is none,
/// an error when the bytes are not a well-formed binary or carry the section twice.
///
/// Only the section layout is checked, not the rest of WebAssembly: compile the bytes to
/// know they are a valid component.
pub fn extract(bytes: &[u8]) -> Result<Option<&[u8]>, Error> {
    extract_named(bytes, SECTION)
}

/// [`extract`] for the custom section named `section` (e.g. `gateway:manifest`).
pub fn extract_named<'a>(bytes: &'a [u8], section: &str) -> Result<Option<&'a [u8]>, Error> {
    let mut found = None;
    for s in sections(bytes)? {
        if s.id != 0 {
            continue;
        }
        let contents = &bytes[s.contents];
        if let Some(payload) = ours(contents, section) {
            if found.is_some() {
                return Err(Error::Duplicate);
            }
            found = Some(&contents[payload..]);
        }
    }
    Ok(found)
}

/// `bytes` with `payload` as its [`SECTION`] custom section: every existing one is removed
/// and the new one appended at the end. Every other section is kept exactly as it was, so
/// embedding the same payload again gives the same bytes.
pub fn embed(bytes: &[u8], payload: &[u8]) -> Result<Vec<u8>, Error> {
    embed_named(bytes, SECTION, payload)
}

/// [`embed`] for the custom section named `section`.
pub fn embed_named(bytes: &[u8], section: &str, payload: &[u8]) -> Result<Vec<u8>, Error> {
    let sections = sections(bytes)?;
    let mut contents = Vec::with_capacity(5 + section.len() + payload.len());
    push_leb_u32(&mut contents, section.len() as u32);
    contents.extend_from_slice(section.as_bytes());
    contents.extend_from_slice(payload);
    let size = u32::try_from(contents.len()).map_err(|_| Error::TooLarge)?;

    let mut out = Vec::with_capacity(bytes.len() + 6 + contents.len());
    out.extend_from_slice(&bytes[..PREAMBLE]);
    for s in sections {
        if s.id == 0 && ours(&bytes[s.contents.clone()], section).is_some() {
            continue;
        }
        out.extend_from_slice(&bytes[s.whole]);
    }
    out.push(0);
    push_leb_u32(&mut out, size);
    out.extend_from_slice(&contents);
    Ok(out)
}

/// An unsigned LEB128 `u32` at the start of `bytes`: `(value, bytes read)`. At most 5 bytes,
/// and the last may not carry bits beyond the 32nd.
fn read_leb_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0u32;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        if i == 4 && b > 0x0f {
            return None;
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Appends `n` as the shortest unsigned LEB128.
fn push_leb_u32(out: &mut Vec<u8>, mut n: u32) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
    const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

    /// A section with `id` and `contents`, encoded.
    fn section(id: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![id];
        push_leb_u32(&mut out, contents.len() as u32);
        out.extend_from_slice(contents);
        out
    }

    /// A custom section named `name` carrying `data`, encoded.
    fn custom(name: &str, data: &[u8]) -> Vec<u8> {
        let mut contents = Vec::new();
        push_leb_u32(&mut contents, name.len() as u32);
        contents.extend_from_slice(name.as_bytes());
        contents.extend_from_slice(data);
        section(0, &contents)
    }

    /// A module with a type section (one `() -> ()` function type) and a `name`-less custom
    /// section around it, so that embedding has neighbours to keep.
    fn module_with_neighbours() -> Vec<u8> {
        let mut m = EMPTY_MODULE.to_vec();
        m.extend(custom("producers", b"\x00"));
        m.extend(section(1, b"\x01\x60\x00\x00"));
        m.extend(custom("other", b"keep me"));
        m
    }

    #[test]
    fn embed_then_extract_round_trips() {
        for base in [EMPTY_COMPONENT, EMPTY_MODULE] {
            assert_eq!(extract(base).unwrap(), None);
            for payload in [&b""[..], b"[]", &[b'x'; 127], &[b'y'; 128], &[b'z'; 20_000]] {
                let with = embed(base, payload).unwrap();
                assert_eq!(&with[..8], base, "the preamble is kept");
                assert_eq!(extract(&with).unwrap(), Some(payload));
            }
        }
    }

    #[test]
    fn embedding_replaces_an_existing_section_and_keeps_the_others_byte_for_byte() {
        let base = module_with_neighbours();
        let first = embed(&base, b"[1]").unwrap();
        assert_eq!(&first[..base.len()], &base[..], "other sections are untouched and come first");
        let second = embed(&first, b"[2, 2]").unwrap();
        assert_eq!(extract(&second).unwrap(), Some(&b"[2, 2]"[..]));
        assert_eq!(second, embed(&base, b"[2, 2]").unwrap(), "replacing is removing, then appending");
        assert_eq!(embed(&second, b"[2, 2]").unwrap(), second, "embedding is idempotent");
    }

    #[test]
    fn a_section_in_the_middle_is_replaced_too() {
        let mut bytes = EMPTY_MODULE.to_vec();
        bytes.extend(custom(SECTION, b"old"));
        bytes.extend(section(1, b"\x01\x60\x00\x00"));
        let mut expected = EMPTY_MODULE.to_vec();
        expected.extend(section(1, b"\x01\x60\x00\x00"));
        expected.extend(custom(SECTION, b"new"));
        assert_eq!(embed(&bytes, b"new").unwrap(), expected);
    }

    #[test]
    fn two_sections_are_an_error_to_read_and_one_after_embedding() {
        let mut bytes = EMPTY_COMPONENT.to_vec();
        bytes.extend(custom(SECTION, b"a"));
        bytes.extend(custom(SECTION, b"b"));
        assert_eq!(extract(&bytes), Err(Error::Duplicate));
        assert_eq!(extract(&embed(&bytes, b"c").unwrap()).unwrap(), Some(&b"c"[..]));
    }

    #[test]
    fn similar_names_are_not_ours() {
        let mut bytes = EMPTY_COMPONENT.to_vec();
        bytes.extend(custom("gateway:fixture", b"x"));
        bytes.extend(custom("gateway:fixtures2", b"x"));
        bytes.extend(section(0, b"\x02\xff\xfe")); // a name that is not UTF-8
        bytes.extend(section(1, SECTION.as_bytes())); // not a custom section
        assert_eq!(extract(&bytes).unwrap(), None);
        let with = embed(&bytes, b"p").unwrap();
        assert_eq!(&with[..bytes.len()], &bytes[..]);
        assert_eq!(extract(&with).unwrap(), Some(&b"p"[..]));
    }

    #[test]
    fn non_wasm_input_is_an_error() {
        for bytes in [&b""[..], b"\0asm", b"\0asm\x01\0\0", b"hello, world", b"\x7fELF\x02\x01\x01\0\0\0"] {
            assert_eq!(extract(bytes), Err(Error::NotWasm), "{bytes:?}");
            assert_eq!(embed(bytes, b"[]"), Err(Error::NotWasm), "{bytes:?}");
        }
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let cases: &[&[u8]] = &[
            b"\0asm\x0d\0\x01\0\x00",                 // an id without a size
            b"\0asm\x0d\0\x01\0\x00\x80",             // a size that never ends
            b"\0asm\x0d\0\x01\0\x00\x05abc",          // contents shorter than the size
            b"\0asm\x0d\0\x01\0\x00\x80\x80\x80\x80\x80\x00", // a six-byte size
            b"\0asm\x0d\0\x01\0\x00\xff\xff\xff\xff\x7f",     // a size beyond u32
            b"\0asm\x0d\0\x01\0\x01\x00\x00\x03",      // a good section, then a bad one
        ];
        for bytes in cases {
            assert!(matches!(extract(bytes), Err(Error::Malformed { .. })), "{bytes:?}");
            assert!(matches!(embed(bytes, b"[]"), Err(Error::Malformed { .. })), "{bytes:?}");
        }
        assert_eq!(extract(b"\0asm\x0d\0\x01\0\x01\x00\x00\x03"), Err(Error::Malformed { offset: 10 }));
        // A custom section whose name runs past its contents is simply not ours.
        let bytes = [EMPTY_COMPONENT, &section(0, b"\x10gate")].concat();
        assert_eq!(extract(&bytes).unwrap(), None);
    }

    #[test]
    fn every_truncation_is_handled() {
        let full = embed(&module_with_neighbours(), &[b'j'; 300]).unwrap();
        for n in 0..full.len() {
            let cut = &full[..n];
            // The section is last: a cut before it finds none, a cut inside it is malformed.
            assert!(!matches!(extract(cut), Ok(Some(_))), "cut at {n}");
            let _ = embed(cut, b"[]");
        }
    }

    #[test]
    fn leb_round_trips_and_rejects_overflow() {
        for n in [0, 1, 127, 128, 16_383, 16_384, u32::MAX] {
            let mut b = Vec::new();
            push_leb_u32(&mut b, n);
            assert_eq!(read_leb_u32(&b), Some((n, b.len())));
        }
        // Padded encodings are valid LEB128 (and some tools write them).
        assert_eq!(read_leb_u32(b"\x85\x80\x80\x80\x00"), Some((5, 5)));
        assert_eq!(read_leb_u32(b"\xff\xff\xff\xff\x10"), None);
        assert_eq!(read_leb_u32(b""), None);
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(Error::Duplicate.to_string(), "more than one custom section of that name");
        assert_eq!(Error::NotWasm.to_string(), "not a WebAssembly binary");
    }

    #[test]
    fn named_sections_live_side_by_side() {
        let with = embed(EMPTY_COMPONENT, b"[]").unwrap();
        let both = embed_named(&with, "gateway:manifest", b"[plugin]").unwrap();
        assert_eq!(extract(&both).unwrap(), Some(&b"[]"[..]));
        assert_eq!(extract_named(&both, "gateway:manifest").unwrap(), Some(&b"[plugin]"[..]));
        let again = embed_named(&both, "gateway:manifest", b"x").unwrap();
        assert_eq!(extract_named(&again, "gateway:manifest").unwrap(), Some(&b"x"[..]));
        assert_eq!(extract(&again).unwrap(), Some(&b"[]"[..]));
    }
}
