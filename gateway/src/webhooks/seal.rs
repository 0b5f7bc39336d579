//! Secrets at rest: sealed with AES-256-GCM under the gateway's key ring, bound (as
//! associated data) to what they belong to, so a sealed value copied to another row does not
//! open. Webhook secrets are bound to their endpoint id; provider credentials to their org,
//! provider and name ([`provider_aad`]).
//!
//! The ring (`GATEWAY_SECRET_KEY`, newest key first) seals with its newest key and opens with
//! any of them: a sealed value names its key by a short id (the first 4 bytes of a SHA-256 of
//! the key), so opening picks the key without trying each. Values sealed before the ring (format
//! 1, no key id) are opened by trying the ring's keys, so the key they were sealed with still
//! opens them. `gateway secrets reseal` moves every value to the newest key.

use base64::Engine;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::Digest;
use uuid::Uuid;

use crate::error::{Error, Result};

/// Format 1: `[1][nonce][ciphertext+tag]`, sealed before key rings (no key id).
const LEGACY: u8 = 1;
/// Format 2: `[2][key id: 4 bytes][nonce][ciphertext+tag]`.
const VERSION: u8 = 2;
const KEY_ID_LEN: usize = 4;

/// A key's short id: the first 4 bytes of SHA-256 over a domain prefix and the key. Shown as
/// 8 hex digits in logs, the start-up check and `gateway secrets reseal`; it reveals nothing
/// usable about a 256-bit random key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    fn of(key: &[u8]) -> KeyId {
        let mut h = sha2::Sha256::new();
        h.update(b"gateway-secret-key-id\0");
        h.update(key);
        let d = h.finalize();
        KeyId([d[0], d[1], d[2], d[3]])
    }

    /// Parses 8 hex digits.
    pub fn parse(text: &str) -> Option<KeyId> {
        let bytes = hex::decode(text).ok()?;
        Some(KeyId(bytes.try_into().ok()?))
    }

    /// The id at the start of a format-2 sealed value (`None` for format 1 or garbage).
    pub fn of_sealed(sealed: &[u8]) -> Option<KeyId> {
        match sealed {
            [VERSION, rest @ ..] if rest.len() >= KEY_ID_LEN => Some(KeyId(rest[..KEY_ID_LEN].try_into().ok()?)),
            _ => None,
        }
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why a sealed value did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed under a key this ring does not hold (the id names it).
    UnknownKey(KeyId),
    /// Sealed before key rings, and no key of the ring opens it.
    LegacyNoKey,
    /// The key is known but the value does not open: altered, truncated, or bound to
    /// something else (copied to another row).
    Invalid,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::UnknownKey(id) => write!(f, "sealed under key id {id}, which is not in this replica's key ring (GATEWAY_SECRET_KEY)"),
            OpenError::LegacyNoKey => f.write_str("sealed before key rings (no key id) and no key of this replica's ring opens it"),
            OpenError::Invalid => f.write_str("does not open: altered, or bound to another row"),
        }
    }
}

struct Key {
    id: KeyId,
    key: LessSafeKey,
}

/// The key ring that seals webhook secrets, provider credentials and notify secrets. Newest
/// key first; it seals, every key opens. Replicas must hold the keys each other seals with.
/// Cheap to clone (the keys are shared).
#[derive(Clone)]
pub struct SecretKey {
    keys: std::sync::Arc<Vec<Key>>,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({:?})", self.ids())
    }
}

impl SecretKey {
    /// From a ring: base64 keys of exactly 32 bytes, newest first, separated by commas,
    /// whitespace or newlines. At least one; no key twice.
    pub fn from_base64(text: &str) -> Result<SecretKey> {
        let mut keys = Vec::new();
        for (i, part) in text.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()).enumerate() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(part)
                .map_err(|_| Error::Config(format!("GATEWAY_SECRET_KEY: key {} of the ring is not base64", i + 1)))?;
            keys.push(Self::key(&bytes).map_err(|e| Error::Config(format!("GATEWAY_SECRET_KEY: key {} of the ring: {e}", i + 1)))?);
        }
        if keys.is_empty() {
            return Err(Error::Config("GATEWAY_SECRET_KEY: the key ring is empty".into()));
        }
        let mut ids: Vec<KeyId> = keys.iter().map(|k: &Key| k.id).collect();
        ids.sort();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Config(format!("GATEWAY_SECRET_KEY: key id {} appears twice in the ring", w[0])));
        }
        Ok(SecretKey { keys: std::sync::Arc::new(keys) })
    }

    fn key(bytes: &[u8]) -> std::result::Result<Key, String> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| "a key must be 32 bytes (base64 of 32 bytes)".to_string())?;
        Ok(Key { id: KeyId::of(bytes), key: LessSafeKey::new(key) })
    }

    #[cfg(test)]
    fn from_bytes(bytes: &[u8]) -> Result<SecretKey> {
        Ok(SecretKey { keys: std::sync::Arc::new(vec![Self::key(bytes).map_err(Error::Config)?]) })
    }

    /// The ring's key ids, newest first.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.id).collect()
    }

    /// The id of the key that seals.
    pub fn newest(&self) -> KeyId {
        self.keys[0].id
    }

    /// `GATEWAY_SECRET_KEY` when given; otherwise `data_dir/secret-key` (the same ring
    /// format), created (0600) with a fresh random key on first start.
    pub fn load(configured: Option<&str>, data_dir: &std::path::Path) -> Result<SecretKey> {
        if let Some(ring) = Self::load_existing(configured, data_dir)? {
            return Ok(ring);
        }
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = data_dir.join("secret-key");
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        std::fs::create_dir_all(data_dir).map_err(|e| Error::io(format!("creating {}", data_dir.display()), e))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let text = base64::engine::general_purpose::STANDARD.encode(bytes);
        f.write_all(text.as_bytes()).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        tracing::info!(path = %path.display(), "created a secret key for webhook secrets (set GATEWAY_SECRET_KEY to share one between replicas)");
        Self::from_base64(&text)
    }

    /// Like [`SecretKey::load`], but `None` instead of creating a key (the CLI must not
    /// invent a ring).
    pub fn load_existing(configured: Option<&str>, data_dir: &std::path::Path) -> Result<Option<SecretKey>> {
        if let Some(text) = configured {
            return Self::from_base64(text).map(Some);
        }
        let path = data_dir.join("secret-key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_base64(&text).map(Some).map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Seals a webhook secret for its endpoint.
    pub fn seal(&self, endpoint: Uuid, plain: &[u8]) -> Vec<u8> {
        self.seal_bound(endpoint.as_bytes(), plain)
    }

    /// `None` when the value does not open (logged, with the reason).
    pub fn open(&self, endpoint: Uuid, sealed: &[u8]) -> Option<Vec<u8>> {
        self.open_bound(endpoint.as_bytes(), sealed)
    }

    /// Seals `plain` bound to `aad` under the newest key: it opens only with the same
    /// associated data.
    pub fn seal_bound(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let newest = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut data = plain.to_vec();
        newest
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut data)
            .expect("AES-GCM sealing a small buffer cannot fail");
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + data.len());
        out.push(VERSION);
        out.extend_from_slice(&newest.id.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        out
    }

    /// `None` when the value does not open; an unknown key id is logged as an error naming
    /// it (the usual cause: replicas with different rings).
    pub fn open_bound(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        match self.try_open_bound(aad, sealed) {
            Ok(plain) => Some(plain),
            Err(e @ (OpenError::UnknownKey(_) | OpenError::LegacyNoKey)) => {
                tracing::error!(ring = %self.ids_text(), "a sealed secret {e}");
                None
            }
            Err(OpenError::Invalid) => None,
        }
    }

    /// Opens `sealed`, saying why it does not.
    pub fn try_open_bound(&self, aad: &[u8], sealed: &[u8]) -> std::result::Result<Vec<u8>, OpenError> {
        match sealed.split_first() {
            Some((&VERSION, rest)) if rest.len() >= KEY_ID_LEN + NONCE_LEN => {
                let (id, rest) = rest.split_at(KEY_ID_LEN);
                let id = KeyId(id.try_into().map_err(|_| OpenError::Invalid)?);
                let key = self.keys.iter().find(|k| k.id == id).ok_or(OpenError::UnknownKey(id))?;
                open_with(&key.key, aad, rest).ok_or(OpenError::Invalid)
            }
            Some((&LEGACY, rest)) if rest.len() >= NONCE_LEN => {
                self.keys.iter().find_map(|k| open_with(&k.key, aad, rest)).ok_or(OpenError::LegacyNoKey)
            }
            _ => Err(OpenError::Invalid),
        }
    }

    /// Whether `sealed` is already under the newest key (nothing for a reseal to do).
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        KeyId::of_sealed(sealed) == Some(self.newest())
    }

    /// The ring's ids as text, newest first (`a1b2c3d4,…`).
    pub fn ids_text(&self) -> String {
        self.ids().iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
    }
}

/// Opens `[nonce][ciphertext+tag]` with one key.
fn open_with(key: &LessSafeKey, aad: &[u8], rest: &[u8]) -> Option<Vec<u8>> {
    let (nonce, data) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut data = data.to_vec();
    let out = key.open_in_place(nonce, Aad::from(aad), &mut data).ok().map(|p| p.to_vec());
    zeroize::Zeroize::zeroize(&mut data);
    out
}

/// The associated data of a provider credential: org, provider and name, unambiguously
/// delimited (a prefix keeps it apart from an endpoint id's 16 bytes; names hold no NUL).
pub fn provider_aad(org: Uuid, provider: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + provider.len() + name.len());
    aad.extend_from_slice(b"provider-secret\0");
    aad.extend_from_slice(org.as_bytes());
    aad.extend_from_slice(provider.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_under_the_same_key_and_endpoint() {
        let key = SecretKey::from_bytes(&[7u8; 32]).unwrap();
        let other = SecretKey::from_bytes(&[8u8; 32]).unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = key.seal(a, b"whsec_secret");
        assert_eq!(key.open(a, &sealed).as_deref(), Some(&b"whsec_secret"[..]));
        assert!(key.open(b, &sealed).is_none());
        assert!(other.open(a, &sealed).is_none());
        assert_ne!(key.seal(a, b"x"), key.seal(a, b"x"), "fresh nonce each time");
        assert!(SecretKey::from_base64("c2hvcnQ=").is_err());
    }

    #[test]
    fn provider_secrets_open_only_for_the_same_org_provider_and_name() {
        let key = SecretKey::from_bytes(&[7u8; 32]).unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = key.seal_bound(&provider_aad(a, "smartlead", "api_key"), b"sk_live");
        assert_eq!(key.open_bound(&provider_aad(a, "smartlead", "api_key"), &sealed).as_deref(), Some(&b"sk_live"[..]));
        for other in [provider_aad(b, "smartlead", "api_key"), provider_aad(a, "heyreach", "api_key"), provider_aad(a, "smartlead", "webhook_secret")] {
            assert!(key.open_bound(&other, &sealed).is_none());
        }
        // Delimited: moving a character between provider and name changes the data.
        assert_ne!(provider_aad(a, "ab", "c"), provider_aad(a, "a", "bc"));
        assert!(key.open(a, &sealed).is_none());
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// A value as the gateway sealed it before key rings: `[1][nonce][ciphertext+tag]`.
    fn legacy_seal(key: &[u8], aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
        let nonce = [3u8; NONCE_LEN];
        let mut data = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut data).unwrap();
        [&[LEGACY][..], &nonce, &data].concat()
    }

    #[test]
    fn the_newest_key_seals_every_key_of_the_ring_opens_and_an_unknown_key_is_named() {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let old = SecretKey::from_base64(&b64(&k1)).unwrap();
        let ring = SecretKey::from_base64(&format!("{}, {}", b64(&k2), b64(&k1))).unwrap();
        let new = SecretKey::from_base64(&b64(&k2)).unwrap();
        assert_eq!(ring.ids(), vec![KeyId::of(&k2), KeyId::of(&k1)]);
        assert_eq!(ring.newest(), new.newest());
        let ep = Uuid::new_v4();

        let by_old = old.seal(ep, b"s1");
        assert_eq!(KeyId::of_sealed(&by_old), Some(KeyId::of(&k1)));
        assert_eq!(ring.open(ep, &by_old).as_deref(), Some(&b"s1"[..]));
        assert!(!ring.is_current(&by_old));
        assert_eq!(new.try_open_bound(ep.as_bytes(), &by_old), Err(OpenError::UnknownKey(KeyId::of(&k1))));
        assert!(new.try_open_bound(ep.as_bytes(), &by_old).unwrap_err().to_string().contains(&KeyId::of(&k1).to_string()));

        let by_ring = ring.seal(ep, b"s2");
        assert!(ring.is_current(&by_ring));
        assert_eq!(new.open(ep, &by_ring).as_deref(), Some(&b"s2"[..]));
        assert_eq!(old.try_open_bound(ep.as_bytes(), &by_ring), Err(OpenError::UnknownKey(KeyId::of(&k2))));
        // A known key with the wrong binding or altered bytes is not an unknown key.
        assert_eq!(ring.try_open_bound(Uuid::new_v4().as_bytes(), &by_ring), Err(OpenError::Invalid));
        let mut altered = by_ring.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(ring.try_open_bound(ep.as_bytes(), &altered), Err(OpenError::Invalid));
        assert_eq!(ring.try_open_bound(ep.as_bytes(), &[]), Err(OpenError::Invalid));
    }

    #[test]
    fn values_sealed_before_the_ring_open_with_the_key_they_were_sealed_with() {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let ep = Uuid::new_v4();
        let legacy = legacy_seal(&k1, ep.as_bytes(), b"whsec_old");
        assert_eq!(KeyId::of_sealed(&legacy), None);
        let single = SecretKey::from_base64(&b64(&k1)).unwrap();
        assert_eq!(single.open(ep, &legacy).as_deref(), Some(&b"whsec_old"[..]));
        let ring = SecretKey::from_base64(&format!("{},{}", b64(&k2), b64(&k1))).unwrap();
        assert_eq!(ring.open(ep, &legacy).as_deref(), Some(&b"whsec_old"[..]));
        assert!(!ring.is_current(&legacy));
        let without = SecretKey::from_base64(&b64(&k2)).unwrap();
        assert_eq!(without.try_open_bound(ep.as_bytes(), &legacy), Err(OpenError::LegacyNoKey));
    }

    #[test]
    fn rings_are_parsed_strictly() {
        let (k1, k2) = (b64(&[1u8; 32]), b64(&[2u8; 32]));
        assert_eq!(SecretKey::from_base64(&format!("{k1}\n{k2}\n")).unwrap().ids().len(), 2);
        for bad in [String::new(), " , ".into(), format!("{k1},{k1}"), format!("{k1},c2hvcnQ="), format!("{k1},not base64!")] {
            assert!(SecretKey::from_base64(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(KeyId::parse(&KeyId::of(&[1u8; 32]).to_string()), Some(KeyId::of(&[1u8; 32])));
    }
}
