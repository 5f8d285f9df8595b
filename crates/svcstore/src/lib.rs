//! bismuth-svcstore: the storage behind the svcprovider API, as a library
//! of its own (svcprovider is the HTTP layer over it; the api writes secrets
//! through its [`SecretWriter`]). One [`Storage`] trait, scoped to one
//! service group, with two real backends.
//!
//! - [`sqlite::SqliteStore`]: the single-host default. K/V, secrets, blob
//!   metadata and usage counters in one SQLite database per group (WAL, safe
//!   for several processes); blob contents as files written atomically.
//! - [`postgres::PgStore`]: the shared backend for a cluster, everything in
//!   PostgreSQL (blobs in 1 MiB chunks).
//!
//! Every write checks the group's [`Quotas`] and updates its usage in the
//! same transaction, so a write that would exceed a quota stores nothing.

pub mod crypto;
pub mod key;
pub mod postgres;
mod secrets;
pub mod sqlite;
mod url;
mod usage;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

pub use secrets::SecretWriter;
pub use url::{validate_group, StoreUrl, UrlError};
pub use usage::{Quotas, Usage};

/// A stream of body chunks (blob uploads and downloads).
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Blob contents being read.
pub struct BlobRead {
    /// Size in bytes.
    pub size: u64,
    /// The contents.
    pub stream: ByteStream,
}

impl std::fmt::Debug for BlobRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobRead")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Whether a blob write creates (POST) or replaces (PUT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Fails with [`StoreError::Exists`] if the key exists.
    Create,
    /// Fails with [`StoreError::Missing`] if the key does not exist.
    Replace,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// POST of a blob that exists.
    #[error("blob {0:?} already exists")]
    Exists(String),
    /// PUT of a blob that does not exist.
    #[error("blob {0:?} does not exist")]
    Missing(String),
    /// The write would exceed one of the group's quotas; nothing was stored.
    #[error("quota {quota} exceeded: limit {limit}, the write needs {needed}")]
    Quota {
        /// The quota's name (`kv_bytes`, `kv_keys`, `blob_bytes`, `blob_count`).
        quota: &'static str,
        /// Its limit.
        limit: u64,
        /// What the group would use after the write.
        needed: u64,
    },
    /// One item is larger than allowed.
    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// Reading the client's body failed mid-way; nothing was stored.
    #[error("request body ended early: {0}")]
    Body(std::io::Error),
    /// Secrets need the cluster key, which this process was not given.
    #[error("secrets are not configured (no cluster key)")]
    NoSecretKey,
    /// A secret could not be decrypted.
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    /// The backend failed.
    #[error("storage backend failed: {0}")]
    Backend(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(format!("sqlite: {e}"))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Backend(format!("postgres: {e}"))
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Backend(format!("i/o: {e}"))
    }
}

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One service group's K/V entries, secrets and blobs.
pub trait Storage: Send + Sync + 'static {
    /// Reads a value.
    fn kv_get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>>> + Send;
    /// Writes a value (creating or replacing it).
    fn kv_put(&self, key: &str, value: Bytes) -> impl Future<Output = Result<()>> + Send;
    /// Deletes a value; false if it did not exist.
    fn kv_delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Reads and decrypts a secret.
    fn secret_get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>>> + Send;
    /// Encrypts and writes a secret (control plane only).
    fn secret_put(&self, key: &str, value: Bytes) -> impl Future<Output = Result<()>> + Send;
    /// Deletes a secret (control plane only); false if it did not exist.
    fn secret_delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Lists blob keys, sorted.
    fn blob_list(&self) -> impl Future<Output = Result<Vec<String>>> + Send;
    /// Opens a blob for streaming.
    fn blob_get(&self, key: &str) -> impl Future<Output = Result<Option<BlobRead>>> + Send;
    /// Streams a blob in; visible only once complete.
    fn blob_put(
        &self,
        key: &str,
        mode: PutMode,
        body: ByteStream,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Deletes a blob; false if it did not exist.
    fn blob_delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// The group's current usage.
    fn usage(&self) -> impl Future<Output = Result<Usage>> + Send;
}
