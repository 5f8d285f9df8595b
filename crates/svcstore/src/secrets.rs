//! The control plane's one narrow way into the store: writing and deleting
//! secrets of any service group. Opened once at start-up (a PostgreSQL
//! store connects and sets up its schema once and keeps one small pool);
//! each write then only names its group.

use bytes::Bytes;

use crate::crypto::SecretKey;
use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::{Quotas, Result, Storage, StoreError, StoreUrl};

/// Writes secrets; cheap to clone.
#[derive(Clone, Debug)]
pub struct SecretWriter {
    backend: Backend,
    key: SecretKey,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(std::path::PathBuf),
    /// Connected once, for a placeholder group; each write borrows its pool.
    Postgres(PgStore),
}

impl SecretWriter {
    /// Opens the store at `url` for secret writes under the cluster `key`.
    pub async fn open(url: &StoreUrl, key: SecretKey) -> Result<SecretWriter> {
        let backend = match url {
            StoreUrl::Sqlite(dir) => Backend::Sqlite(dir.clone()),
            StoreUrl::Postgres(u) => Backend::Postgres(
                PgStore::connect(u, "_secrets", Quotas::default(), Some(key.clone())).await?,
            ),
        };
        Ok(SecretWriter { backend, key })
    }

    /// Sets `key` of `group` to `value`.
    pub async fn put(&self, group: &str, key: &str, value: Bytes) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(dir) => self.sqlite(dir, group)?.secret_put(key, value).await,
            Backend::Postgres(pg) => pg.with_group(group).secret_put(key, value).await,
        }
    }

    /// Deletes `key` of `group`; false if it did not exist.
    pub async fn delete(&self, group: &str, key: &str) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite(dir) => self.sqlite(dir, group)?.secret_delete(key).await,
            Backend::Postgres(pg) => pg.with_group(group).secret_delete(key).await,
        }
    }

    fn sqlite(&self, dir: &std::path::Path, group: &str) -> Result<SqliteStore> {
        crate::validate_group(group).map_err(|e| StoreError::Backend(e.to_string()))?;
        SqliteStore::open(dir, group, Quotas::default(), Some(self.key.clone()))
    }
}
