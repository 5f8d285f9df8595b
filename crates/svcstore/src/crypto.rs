//! Encryption of secrets at rest: ChaCha20-Poly1305 under the cluster key,
//! a random nonce per write, and the service group and key bound in as
//! associated data so a ciphertext cannot be moved to another key or group.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

/// The cluster key, 32 bytes.
#[derive(Clone)]
pub struct SecretKey(Key);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// A bad key file or a ciphertext that does not decrypt.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key is not 32 bytes (raw) or 64 hex digits.
    #[error("secret key must be 32 raw bytes or 64 hex digits, found {0} bytes")]
    BadKey(usize),
    /// Decryption failed: wrong key, or the data was altered.
    #[error("secret {0:?} cannot be decrypted (wrong cluster key or tampered data)")]
    Decrypt(String),
}

impl SecretKey {
    /// Parses key material: 32 raw bytes, or 64 hex digits (whitespace trimmed).
    pub fn from_bytes(material: &[u8]) -> Result<Self, CryptoError> {
        let trimmed = std::str::from_utf8(material).map(str::trim).ok();
        let raw = match trimmed.and_then(|t| hex::decode(t).ok()) {
            Some(decoded) if decoded.len() == 32 => decoded,
            _ if material.len() == 32 => material.to_vec(),
            _ => return Err(CryptoError::BadKey(material.len())),
        };
        Ok(SecretKey(*Key::from_slice(&raw)))
    }

    /// A fresh random key (for tests and `svcprovider keygen`).
    pub fn generate() -> Self {
        SecretKey(*Key::from_slice(&rand::random::<[u8; 32]>()))
    }

    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Encrypts; returns nonce and ciphertext.
    pub fn seal(&self, group: &str, key: &str, plaintext: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let nonce: [u8; 12] = rand::random();
        let aad = format!("{group}\0{key}");
        let ct = ChaCha20Poly1305::new(&self.0)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            // Encryption cannot fail for in-memory buffers of this size.
            .unwrap_or_default();
        (nonce.to_vec(), ct)
    }

    /// Decrypts what [`SecretKey::seal`] produced for the same group and key.
    pub fn open(
        &self,
        group: &str,
        key: &str,
        nonce: &[u8],
        ct: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        if nonce.len() != 12 {
            return Err(CryptoError::Decrypt(key.to_owned()));
        }
        let aad = format!("{group}\0{key}");
        ChaCha20Poly1305::new(&self.0)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let k = SecretKey::generate();
        let (n, ct) = k.seal("g", "db-password", b"hunter2");
        assert_ne!(ct, b"hunter2");
        assert_eq!(k.open("g", "db-password", &n, &ct).unwrap(), b"hunter2");
        assert!(
            k.open("g", "other-key", &n, &ct).is_err(),
            "bound to the key"
        );
        assert!(
            k.open("h", "db-password", &n, &ct).is_err(),
            "bound to the group"
        );
        assert!(SecretKey::generate()
            .open("g", "db-password", &n, &ct)
            .is_err());
    }

    #[test]
    fn parses_hex_and_raw() {
        let k = SecretKey::generate();
        let again = SecretKey::from_bytes(format!("{}\n", k.to_hex()).as_bytes()).unwrap();
        assert_eq!(again.to_hex(), k.to_hex());
        assert!(SecretKey::from_bytes(&[1; 32]).is_ok());
        assert!(SecretKey::from_bytes(b"short").is_err());
    }
}
