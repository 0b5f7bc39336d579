//! Secrets at rest: sealed with AES-256-GCM under the gateway's secret key, bound (as
//! associated data) to what they belong to, so a sealed value copied to another row does not
//! open. Webhook secrets are bound to their endpoint id; provider credentials to their org,
//! provider and name ([`provider_aad`]).

use base64::Engine;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use uuid::Uuid;

use crate::error::{Error, Result};

/// Format version of a sealed value (the first byte).
const VERSION: u8 = 1;

/// The key that seals webhook secrets and provider credentials. Replicas must share it.
/// Cheap to clone (the key is shared).
#[derive(Clone)]
pub struct SecretKey {
    key: std::sync::Arc<LessSafeKey>,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// From base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<SecretKey> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| Error::Config("GATEWAY_SECRET_KEY is not base64".into()))?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<SecretKey> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| Error::Config("the secret key must be 32 bytes (base64 of 32 bytes)".into()))?;
        Ok(SecretKey { key: std::sync::Arc::new(LessSafeKey::new(key)) })
    }

    /// `GATEWAY_SECRET_KEY` when given; otherwise `data_dir/secret-key`, created (0600) with a
    /// fresh random key on first start.
    pub fn load(configured: Option<&str>, data_dir: &std::path::Path) -> Result<SecretKey> {
        if let Some(text) = configured {
            return Self::from_base64(text);
        }
        let path = data_dir.join("secret-key");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_base64(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut bytes = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                std::fs::create_dir_all(data_dir).map_err(|e| Error::io(format!("creating {}", data_dir.display()), e))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
                f.write_all(base64::engine::general_purpose::STANDARD.encode(bytes).as_bytes())
                    .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
                tracing::info!(path = %path.display(), "created a secret key for webhook secrets (set GATEWAY_SECRET_KEY to share one between replicas)");
                Self::from_bytes(&bytes)
            }
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Seals a webhook secret for its endpoint.
    pub fn seal(&self, endpoint: Uuid, plain: &[u8]) -> Vec<u8> {
        self.seal_bound(endpoint.as_bytes(), plain)
    }

    /// `None` when the value was sealed under another key or for another endpoint.
    pub fn open(&self, endpoint: Uuid, sealed: &[u8]) -> Option<Vec<u8>> {
        self.open_bound(endpoint.as_bytes(), sealed)
    }

    /// Seals `plain` bound to `aad`: it opens only with the same associated data.
    pub fn seal_bound(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut data)
            .expect("AES-GCM sealing a small buffer cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + data.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        out
    }

    /// `None` when the value was sealed under another key or with other associated data.
    pub fn open_bound(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        let (&version, rest) = sealed.split_first()?;
        if version != VERSION || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, data) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(aad), &mut data).ok()?;
        let out = plain.to_vec();
        zeroize::Zeroize::zeroize(&mut data);
        Some(out)
    }
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
}
