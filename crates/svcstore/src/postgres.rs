//! The shared backend for a cluster: K/V, secrets and blobs in PostgreSQL,
//! so a function's data is the same whichever host runs it.
//!
//! Blobs are stored in 1 MiB chunks. An upload inserts its chunks inside
//! one transaction and only at the end locks the group's usage row, checks
//! the mode and the quota, and points the key at the new chunks, so an
//! aborted upload leaves nothing. A download reads through a cursor in a
//! repeatable-read transaction, so a concurrent replace cannot cut it short.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, GenericClient, NoTls};
use tracing::{info, warn};

use super::{BlobRead, ByteStream, PutMode, Quotas, Result, Storage, StoreError, Usage};
use crate::crypto::SecretKey;

const CHUNK: usize = 1 << 20;
const POOL_SIZE: usize = 4;

const SCHEMA: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(7372001);
CREATE TABLE IF NOT EXISTS svc_kv (grp text NOT NULL, key text NOT NULL, value bytea NOT NULL, PRIMARY KEY (grp, key));
CREATE TABLE IF NOT EXISTS svc_secrets (grp text NOT NULL, key text NOT NULL, nonce bytea NOT NULL, ciphertext bytea NOT NULL, PRIMARY KEY (grp, key));
CREATE TABLE IF NOT EXISTS svc_blobs (grp text NOT NULL, key text NOT NULL, id bigint NOT NULL, size bigint NOT NULL, PRIMARY KEY (grp, key));
CREATE TABLE IF NOT EXISTS svc_blob_chunks (id bigint NOT NULL, seq integer NOT NULL, data bytea NOT NULL, PRIMARY KEY (id, seq));
CREATE TABLE IF NOT EXISTS svc_usage (grp text PRIMARY KEY, kv_bytes bigint NOT NULL DEFAULT 0, kv_keys bigint NOT NULL DEFAULT 0, blob_bytes bigint NOT NULL DEFAULT 0, blob_count bigint NOT NULL DEFAULT 0);
COMMIT;
";

/// A service group's store in a PostgreSQL database.
#[derive(Clone, Debug)]
pub struct PgStore {
    inner: Arc<PgInner>,
}

#[derive(Debug)]
struct PgInner {
    group: String,
    pool: Arc<Pool>,
    quotas: Quotas,
    key: Option<SecretKey>,
}

impl PgStore {
    /// Connects, creates the tables if needed, and registers the group.
    pub async fn connect(
        url: &str,
        group: &str,
        quotas: Quotas,
        key: Option<SecretKey>,
    ) -> Result<Self> {
        let pool = Arc::new(Pool {
            url: url.to_owned(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(POOL_SIZE)),
        });
        let c = pool.get().await?;
        c.batch_execute(SCHEMA).await?;
        c.execute(
            "INSERT INTO svc_usage (grp) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&group],
        )
        .await?;
        drop(c);
        info!(group, "connected to PostgreSQL store");
        Ok(PgStore {
            inner: Arc::new(PgInner {
                group: group.to_owned(),
                pool,
                quotas,
                key,
            }),
        })
    }
}

impl PgStore {
    /// The same pool and key, scoped to another group (no new connection;
    /// for secret writes, which keep no usage row).
    pub fn with_group(&self, group: &str) -> PgStore {
        PgStore {
            inner: Arc::new(PgInner {
                group: group.to_owned(),
                pool: Arc::clone(&self.inner.pool),
                quotas: self.inner.quotas.clone(),
                key: self.inner.key.clone(),
            }),
        }
    }
}

/// A few connections, reused; a connection left inside a transaction is
/// closed instead of reused.
#[derive(Debug)]
struct Pool {
    url: String,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

struct Conn {
    client: Option<Client>,
    pool: Arc<Pool>,
    reusable: bool,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    async fn get(self: &Arc<Self>) -> Result<Conn> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Backend("connection pool closed".into()))?;
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let client = match idle.filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => {
                let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        warn!(error = %e, "PostgreSQL connection ended");
                    }
                });
                client
            }
        };
        Ok(Conn {
            client: Some(client),
            pool: Arc::clone(self),
            reusable: true,
            _permit: permit,
        })
    }
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        // Only taken in Drop.
        self.client
            .as_ref()
            .unwrap_or_else(|| unreachable!("connection used after drop"))
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
            .as_mut()
            .unwrap_or_else(|| unreachable!("connection used after drop"))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if self.reusable && !client.is_closed() {
                if let Ok(mut idle) = self.pool.idle.lock() {
                    idle.push(client);
                }
            }
        }
    }
}

async fn lock_usage(tx: &impl GenericClient, group: &str) -> Result<Usage> {
    let row = tx
        .query_one(
            "SELECT kv_bytes, kv_keys, blob_bytes, blob_count FROM svc_usage WHERE grp = $1 FOR UPDATE",
            &[&group],
        )
        .await?;
    Ok(Usage {
        kv_bytes: row.get::<_, i64>(0) as u64,
        kv_keys: row.get::<_, i64>(1) as u64,
        blob_bytes: row.get::<_, i64>(2) as u64,
        blob_count: row.get::<_, i64>(3) as u64,
    })
}

async fn write_usage(tx: &impl GenericClient, group: &str, u: &Usage) -> Result<()> {
    tx.execute(
        "UPDATE svc_usage SET kv_bytes = $2, kv_keys = $3, blob_bytes = $4, blob_count = $5 WHERE grp = $1",
        &[&group, &(u.kv_bytes as i64), &(u.kv_keys as i64), &(u.blob_bytes as i64), &(u.blob_count as i64)],
    )
    .await?;
    Ok(())
}

impl Storage for PgStore {
    async fn kv_get(&self, key: &str) -> Result<Option<Bytes>> {
        let c = self.inner.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT value FROM svc_kv WHERE grp = $1 AND key = $2",
                &[&self.inner.group, &key],
            )
            .await?;
        Ok(row.map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
    }

    async fn kv_put(&self, key: &str, value: Bytes) -> Result<()> {
        let g = &self.inner.group;
        let mut c = self.inner.pool.get().await?;
        let tx = c.transaction().await?;
        let usage = lock_usage(&tx, g).await?;
        let old = tx
            .query_opt(
                "SELECT octet_length(value) FROM svc_kv WHERE grp = $1 AND key = $2",
                &[g, &key],
            )
            .await?
            .map(|r| r.get::<_, i32>(0) as u64);
        let klen = key.len() as u64;
        let after = usage.with_kv(old.map(|o| o + klen), Some(value.len() as u64 + klen));
        after.check(&self.inner.quotas)?;
        tx.execute(
            "INSERT INTO svc_kv (grp, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (grp, key) DO UPDATE SET value = EXCLUDED.value",
            &[g, &key, &value.as_ref()],
        )
        .await?;
        write_usage(&tx, g, &after).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn kv_delete(&self, key: &str) -> Result<bool> {
        let g = &self.inner.group;
        let mut c = self.inner.pool.get().await?;
        let tx = c.transaction().await?;
        let usage = lock_usage(&tx, g).await?;
        let old = tx
            .query_opt(
                "DELETE FROM svc_kv WHERE grp = $1 AND key = $2 RETURNING octet_length(value)",
                &[g, &key],
            )
            .await?
            .map(|r| r.get::<_, i32>(0) as u64);
        let Some(old) = old else { return Ok(false) };
        write_usage(&tx, g, &usage.with_kv(Some(old + key.len() as u64), None)).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn secret_get(&self, key: &str) -> Result<Option<Bytes>> {
        let secret = self.inner.key.as_ref().ok_or(StoreError::NoSecretKey)?;
        let c = self.inner.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT nonce, ciphertext FROM svc_secrets WHERE grp = $1 AND key = $2",
                &[&self.inner.group, &key],
            )
            .await?;
        match row {
            Some(r) => {
                let (nonce, ct): (Vec<u8>, Vec<u8>) = (r.get(0), r.get(1));
                Ok(Some(Bytes::from(secret.open(
                    &self.inner.group,
                    key,
                    &nonce,
                    &ct,
                )?)))
            }
            None => Ok(None),
        }
    }

    async fn secret_put(&self, key: &str, value: Bytes) -> Result<()> {
        let secret = self.inner.key.as_ref().ok_or(StoreError::NoSecretKey)?;
        let (nonce, ct) = secret.seal(&self.inner.group, key, &value);
        let c = self.inner.pool.get().await?;
        c.execute(
            "INSERT INTO svc_secrets (grp, key, nonce, ciphertext) VALUES ($1, $2, $3, $4)
             ON CONFLICT (grp, key) DO UPDATE SET nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext",
            &[&self.inner.group, &key, &nonce, &ct],
        )
        .await?;
        Ok(())
    }

    async fn secret_delete(&self, key: &str) -> Result<bool> {
        let c = self.inner.pool.get().await?;
        let n = c
            .execute(
                "DELETE FROM svc_secrets WHERE grp = $1 AND key = $2",
                &[&self.inner.group, &key],
            )
            .await?;
        Ok(n > 0)
    }

    async fn blob_list(&self) -> Result<Vec<String>> {
        let c = self.inner.pool.get().await?;
        let rows = c
            .query(
                "SELECT key FROM svc_blobs WHERE grp = $1 ORDER BY key",
                &[&self.inner.group],
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn blob_get(&self, key: &str) -> Result<Option<BlobRead>> {
        let mut c = self.inner.pool.get().await?;
        // Until COMMIT, this connection must not go back to the pool.
        c.reusable = false;
        c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let row = c
            .query_opt(
                "SELECT id, size FROM svc_blobs WHERE grp = $1 AND key = $2",
                &[&self.inner.group, &key],
            )
            .await?;
        let Some(row) = row else {
            c.batch_execute("COMMIT").await?;
            c.reusable = true;
            return Ok(None);
        };
        let (id, size): (i64, i64) = (row.get(0), row.get(1));
        c.batch_execute(&format!(
            "DECLARE blob_read NO SCROLL CURSOR FOR SELECT data FROM svc_blob_chunks WHERE id = {id} ORDER BY seq"
        ))
        .await?;
        let stream = futures_util::stream::unfold(Some(c), |state| async move {
            let mut c = state?;
            match c.query("FETCH 4 FROM blob_read", &[]).await {
                Ok(rows) if rows.is_empty() => {
                    if c.batch_execute("COMMIT").await.is_ok() {
                        c.reusable = true;
                    }
                    None
                }
                Ok(rows) => {
                    let mut buf = BytesMut::new();
                    for r in rows {
                        buf.extend_from_slice(r.get::<_, &[u8]>(0));
                    }
                    Some((Ok(buf.freeze()), Some(c)))
                }
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
            }
        });
        Ok(Some(BlobRead {
            size: size as u64,
            stream: Box::pin(stream),
        }))
    }

    async fn blob_put(&self, key: &str, mode: PutMode, mut body: ByteStream) -> Result<()> {
        let g = &self.inner.group;
        let limit = self.inner.quotas.blob_bytes;
        let mut c = self.inner.pool.get().await?;
        let tx = c.transaction().await?;
        let insert = tx
            .prepare("INSERT INTO svc_blob_chunks (id, seq, data) VALUES ($1, $2, $3)")
            .await?;
        let id: i64 = rand::random::<i64>() & i64::MAX;
        let (mut seq, mut size) = (0i32, 0u64);
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            let next = match body.next().await {
                Some(Ok(chunk)) => Some(chunk),
                Some(Err(e)) => return Err(StoreError::Body(e)),
                None => None,
            };
            if let Some(chunk) = &next {
                size += chunk.len() as u64;
                if let Some(limit) = limit.filter(|l| size > *l) {
                    return Err(StoreError::Quota {
                        quota: "blob_bytes",
                        limit,
                        needed: size,
                    });
                }
                buf.extend_from_slice(chunk);
            }
            while buf.len() >= CHUNK || (next.is_none() && !buf.is_empty()) {
                let part = buf.split_to(buf.len().min(CHUNK));
                tx.execute(&insert, &[&id, &seq, &part.as_ref()]).await?;
                seq += 1;
            }
            if next.is_none() {
                break;
            }
        }
        let usage = lock_usage(&tx, g).await?;
        let old = tx
            .query_opt(
                "SELECT id, size FROM svc_blobs WHERE grp = $1 AND key = $2 FOR UPDATE",
                &[g, &key],
            )
            .await?
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1) as u64));
        match (mode, &old) {
            (PutMode::Create, Some(_)) => return Err(StoreError::Exists(key.to_owned())),
            (PutMode::Replace, None) => return Err(StoreError::Missing(key.to_owned())),
            _ => {}
        }
        let after = usage.with_blob(old.map(|o| o.1), Some(size));
        after.check(&self.inner.quotas)?;
        tx.execute(
            "INSERT INTO svc_blobs (grp, key, id, size) VALUES ($1, $2, $3, $4)
             ON CONFLICT (grp, key) DO UPDATE SET id = EXCLUDED.id, size = EXCLUDED.size",
            &[g, &key, &id, &(size as i64)],
        )
        .await?;
        if let Some((old_id, _)) = old {
            tx.execute("DELETE FROM svc_blob_chunks WHERE id = $1", &[&old_id])
                .await?;
        }
        write_usage(&tx, g, &after).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn blob_delete(&self, key: &str) -> Result<bool> {
        let g = &self.inner.group;
        let mut c = self.inner.pool.get().await?;
        let tx = c.transaction().await?;
        let usage = lock_usage(&tx, g).await?;
        let old = tx
            .query_opt(
                "DELETE FROM svc_blobs WHERE grp = $1 AND key = $2 RETURNING id, size",
                &[g, &key],
            )
            .await?
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1) as u64));
        let Some((id, size)) = old else {
            return Ok(false);
        };
        tx.execute("DELETE FROM svc_blob_chunks WHERE id = $1", &[&id])
            .await?;
        write_usage(&tx, g, &usage.with_blob(Some(size), None)).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn usage(&self) -> Result<Usage> {
        let mut c = self.inner.pool.get().await?;
        let tx = c.transaction().await?;
        let u = lock_usage(&tx, &self.inner.group).await?;
        tx.commit().await?;
        Ok(u)
    }
}
