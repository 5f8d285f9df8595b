//! The single-host backend: one SQLite database per service group (WAL,
//! `synchronous=FULL`, shared safely by several svcprovider processes of the
//! group), and blob contents as files.
//!
//! A blob is written to `{id}.tmp`, fsynced, renamed to `{id}` and the
//! directory fsynced; only then does a transaction point the key at `{id}`
//! (and check the quota). Readers find files only through committed rows,
//! so a crash or a failed write never exposes a partial blob; files left
//! without a row are removed at the next start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use super::{BlobRead, ByteStream, PutMode, Quotas, Result, Storage, StoreError, Usage};
use crate::crypto::SecretKey;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS secrets (key TEXT PRIMARY KEY, nonce BLOB NOT NULL, ciphertext BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, file TEXT NOT NULL, size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS usage (id INTEGER PRIMARY KEY CHECK (id = 1),
    kv_bytes INTEGER NOT NULL, kv_keys INTEGER NOT NULL,
    blob_bytes INTEGER NOT NULL, blob_count INTEGER NOT NULL);
INSERT OR IGNORE INTO usage VALUES (1, 0, 0, 0, 0);
";

/// Files of unfinished or abandoned writes older than this are removed at start.
const ORPHAN_AGE: Duration = Duration::from_secs(600);

/// A service group's store in `{dir}/{group}/`.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    group: String,
    conn: Mutex<Connection>,
    blobs: PathBuf,
    quotas: Quotas,
    key: Option<SecretKey>,
}

impl SqliteStore {
    /// Opens (creating if needed) the group's database and blob directory.
    pub fn open(dir: &Path, group: &str, quotas: Quotas, key: Option<SecretKey>) -> Result<Self> {
        let root = dir.join(group);
        let blobs = root.join("blobs");
        std::fs::create_dir_all(&blobs)?;
        let mut conn = Connection::open(root.join("store.sqlite"))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            warn!(mode, "SQLite did not switch to WAL mode");
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA cache_size=-512;")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        tx.commit()?;
        let store = SqliteStore {
            inner: Arc::new(Inner {
                group: group.to_owned(),
                conn: Mutex::new(conn),
                blobs,
                quotas,
                key,
            }),
        };
        store.remove_orphans();
        info!(group, dir = %root.display(), "opened SQLite store");
        Ok(store)
    }

    /// Runs `f` on the connection in the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .conn
                .lock()
                .map_err(|_| StoreError::Backend("sqlite connection lock poisoned".into()))?;
            f(&mut conn, &inner)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("sqlite task failed: {e}")))?
    }

    /// Deletes blob files no committed row refers to, once they are old enough
    /// that no write in progress (in any process of the group) can own them.
    fn remove_orphans(&self) {
        let referenced: std::collections::HashSet<String> = match self.inner.conn.lock() {
            Ok(conn) => conn
                .prepare("SELECT file FROM blobs")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .unwrap_or_default(),
            Err(_) => return,
        };
        let Ok(entries) = std::fs::read_dir(&self.inner.blobs) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > ORPHAN_AGE);
            if old && !referenced.contains(&name) {
                debug!(file = name, "removing orphaned blob file");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn read_usage(tx: &Transaction<'_>) -> Result<Usage> {
    Ok(tx.query_row(
        "SELECT kv_bytes, kv_keys, blob_bytes, blob_count FROM usage WHERE id = 1",
        [],
        |r| {
            Ok(Usage {
                kv_bytes: r.get::<_, i64>(0)? as u64,
                kv_keys: r.get::<_, i64>(1)? as u64,
                blob_bytes: r.get::<_, i64>(2)? as u64,
                blob_count: r.get::<_, i64>(3)? as u64,
            })
        },
    )?)
}

fn write_usage(tx: &Transaction<'_>, u: &Usage) -> Result<()> {
    tx.execute(
        "UPDATE usage SET kv_bytes = ?1, kv_keys = ?2, blob_bytes = ?3, blob_count = ?4 WHERE id = 1",
        params![u.kv_bytes as i64, u.kv_keys as i64, u.blob_bytes as i64, u.blob_count as i64],
    )?;
    Ok(())
}

fn immediate(conn: &mut Connection) -> Result<Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

impl Storage for SqliteStore {
    async fn kv_get(&self, key: &str) -> Result<Option<Bytes>> {
        let key = key.to_owned();
        self.with_conn(move |conn, _| {
            let v: Option<Vec<u8>> = conn
                .query_row("SELECT value FROM kv WHERE key = ?1", [&key], |r| r.get(0))
                .optional()?;
            Ok(v.map(Bytes::from))
        })
        .await
    }

    async fn kv_put(&self, key: &str, value: Bytes) -> Result<()> {
        let key = key.to_owned();
        self.with_conn(move |conn, inner| {
            let tx = immediate(conn)?;
            let old: Option<i64> = tx
                .query_row("SELECT length(value) FROM kv WHERE key = ?1", [&key], |r| r.get(0))
                .optional()?;
            let klen = key.len() as u64;
            let after = read_usage(&tx)?
                .with_kv(old.map(|o| o as u64 + klen), Some(value.len() as u64 + klen));
            after.check(&inner.quotas)?;
            tx.execute(
                "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, &value[..]],
            )?;
            write_usage(&tx, &after)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn kv_delete(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.with_conn(move |conn, _| {
            let tx = immediate(conn)?;
            let old: Option<i64> = tx
                .query_row("SELECT length(value) FROM kv WHERE key = ?1", [&key], |r| {
                    r.get(0)
                })
                .optional()?;
            let Some(old) = old else { return Ok(false) };
            let after = read_usage(&tx)?.with_kv(Some(old as u64 + key.len() as u64), None);
            tx.execute("DELETE FROM kv WHERE key = ?1", [&key])?;
            write_usage(&tx, &after)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn secret_get(&self, key: &str) -> Result<Option<Bytes>> {
        let key = key.to_owned();
        self.with_conn(move |conn, inner| {
            let secret = inner.key.as_ref().ok_or(StoreError::NoSecretKey)?;
            let row: Option<(Vec<u8>, Vec<u8>)> = conn
                .query_row(
                    "SELECT nonce, ciphertext FROM secrets WHERE key = ?1",
                    [&key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match row {
                Some((nonce, ct)) => Ok(Some(Bytes::from(secret.open(
                    &inner.group,
                    &key,
                    &nonce,
                    &ct,
                )?))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn secret_put(&self, key: &str, value: Bytes) -> Result<()> {
        let key = key.to_owned();
        self.with_conn(move |conn, inner| {
            let secret = inner.key.as_ref().ok_or(StoreError::NoSecretKey)?;
            let (nonce, ct) = secret.seal(&inner.group, &key, &value);
            conn.execute(
                "INSERT INTO secrets (key, nonce, ciphertext) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext",
                params![key, nonce, ct],
            )?;
            Ok(())
        })
        .await
    }

    async fn secret_delete(&self, key: &str) -> Result<bool> {
        let key = key.to_owned();
        self.with_conn(move |conn, _| {
            Ok(conn.execute("DELETE FROM secrets WHERE key = ?1", [&key])? > 0)
        })
        .await
    }

    async fn blob_list(&self) -> Result<Vec<String>> {
        self.with_conn(|conn, _| {
            let mut stmt = conn.prepare("SELECT key FROM blobs ORDER BY key")?;
            let keys = stmt
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            Ok(keys)
        })
        .await
    }

    async fn blob_get(&self, key: &str) -> Result<Option<BlobRead>> {
        // A concurrent replace may delete the file between lookup and open; look again.
        for _ in 0..3 {
            let k = key.to_owned();
            let row: Option<(String, i64)> = self
                .with_conn(move |conn, _| {
                    Ok(conn
                        .query_row("SELECT file, size FROM blobs WHERE key = ?1", [&k], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })
                        .optional()?)
                })
                .await?;
            let Some((file, size)) = row else {
                return Ok(None);
            };
            match tokio::fs::File::open(self.inner.blobs.join(&file)).await {
                Ok(f) => {
                    let stream = tokio_util::io::ReaderStream::with_capacity(f, 64 * 1024);
                    return Ok(Some(BlobRead {
                        size: size as u64,
                        stream: Box::pin(stream),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Backend(format!(
            "blob {key:?} keeps changing while being opened"
        )))
    }

    async fn blob_put(&self, key: &str, mode: PutMode, mut body: ByteStream) -> Result<()> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tmp = self.inner.blobs.join(format!("{id}.tmp"));
        let path = self.inner.blobs.join(&id);
        let limit = self.inner.quotas.blob_bytes;
        let written: Result<u64> = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StoreError::Body)?;
                size += chunk.len() as u64;
                if let Some(limit) = limit.filter(|l| size > *l) {
                    return Err(StoreError::Quota {
                        quota: "blob_bytes",
                        limit,
                        needed: size,
                    });
                }
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&tmp, &path).await?;
            tokio::fs::File::open(&self.inner.blobs)
                .await?
                .sync_all()
                .await?;
            Ok(size)
        }
        .await;
        let size = match written {
            Ok(size) => size,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let key = key.to_owned();
        let file = id.clone();
        let committed = self
            .with_conn(move |conn, inner| {
                let tx = immediate(conn)?;
                let old: Option<(String, i64)> = tx
                    .query_row("SELECT file, size FROM blobs WHERE key = ?1", [&key], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                match (mode, &old) {
                    (PutMode::Create, Some(_)) => return Err(StoreError::Exists(key)),
                    (PutMode::Replace, None) => return Err(StoreError::Missing(key)),
                    _ => {}
                }
                let after =
                    read_usage(&tx)?.with_blob(old.as_ref().map(|o| o.1 as u64), Some(size));
                after.check(&inner.quotas)?;
                tx.execute(
                    "INSERT INTO blobs (key, file, size) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET file = excluded.file, size = excluded.size",
                    params![key, file, size as i64],
                )?;
                write_usage(&tx, &after)?;
                tx.commit()?;
                Ok(old.map(|o| o.0))
            })
            .await;
        match committed {
            Ok(old) => {
                if let Some(old) = old {
                    let _ = tokio::fs::remove_file(self.inner.blobs.join(old)).await;
                }
                Ok(())
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                Err(e)
            }
        }
    }

    async fn blob_delete(&self, key: &str) -> Result<bool> {
        let k = key.to_owned();
        let removed: Option<String> = self
            .with_conn(move |conn, _| {
                let tx = immediate(conn)?;
                let old: Option<(String, i64)> = tx
                    .query_row("SELECT file, size FROM blobs WHERE key = ?1", [&k], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                let Some((file, size)) = old else {
                    return Ok(None);
                };
                let after = read_usage(&tx)?.with_blob(Some(size as u64), None);
                tx.execute("DELETE FROM blobs WHERE key = ?1", [&k])?;
                write_usage(&tx, &after)?;
                tx.commit()?;
                Ok(Some(file))
            })
            .await?;
        match removed {
            Some(file) => {
                let _ = tokio::fs::remove_file(self.inner.blobs.join(file)).await;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn usage(&self) -> Result<Usage> {
        self.with_conn(|conn, _| {
            let tx = conn.transaction()?;
            read_usage(&tx)
        })
        .await
    }
}
