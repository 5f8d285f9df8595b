//! [`Zk`]: the handle every component uses to talk to ZooKeeper.
//!
//! It holds one session chrooted to `/{env}`. The client library reconnects
//! within a session by itself; when the session expires (ZooKeeper restarted
//! with new data, or a partition longer than the session timeout), the next
//! call transparently opens a new session. Watches are re-established by
//! [`Zk::watch_tree`], which tells its consumer to re-read.

use std::sync::Arc;
use std::time::Duration;

use bismuth_controller::Backoff;

use tokio::sync::Mutex;
use tracing::{debug, info};
use zookeeper_client as zkc;

use crate::config::ZkConfig;
use crate::error::ZkError;

/// A value read from a znode together with the version to check when writing it back.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    /// The decoded value.
    pub value: T,
    /// The znode's data version when read.
    pub version: i32,
}

/// Paths per multi-read request (keeps responses well under ZooKeeper's 1 MB limit).
const MULTI_READ_CHUNK: usize = 500;

/// A shared ZooKeeper handle for one environment; clones share the session.
#[derive(Clone, Debug)]
pub struct Zk {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ZkConfig,
    client: Mutex<zkc::Client>,
    /// Set once the environment's top-level znodes were seen; they are never removed.
    bootstrapped: std::sync::atomic::AtomicBool,
}

pub(crate) fn persistent() -> zkc::CreateOptions<'static> {
    zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all())
}

pub(crate) fn ephemeral() -> zkc::CreateOptions<'static> {
    zkc::CreateMode::Ephemeral.with_acls(zkc::Acls::anyone_all())
}

impl Zk {
    /// Connects to the ensemble with a session chrooted to `/{env}`. Fails within
    /// the configured connect timeout when no server answers. The environment
    /// need not exist yet (see [`Zk::bootstrap`]).
    pub async fn connect(config: ZkConfig) -> Result<Zk, ZkError> {
        let client = new_session(&config, &config.chroot()).await?;
        info!(servers = %config.servers_string(), env = %config.env, "connected to ZooKeeper");
        Ok(Zk {
            inner: Arc::new(Inner {
                config,
                client: Mutex::new(client),
                bootstrapped: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Connects like [`Zk::connect`], retrying with jittered backoff (200 ms
    /// up to 2 s) until ZooKeeper answers; `None` if `shutdown` is cancelled
    /// first. For daemons that start before ZooKeeper is reachable.
    pub async fn connect_retrying(
        config: ZkConfig,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<Zk> {
        let mut retry = Backoff::new(Duration::from_millis(200), Duration::from_secs(2)).retry();
        loop {
            match Zk::connect(config.clone()).await {
                Ok(zk) => return Some(zk),
                Err(e) => {
                    tracing::warn!(error = %e, attempt = retry.attempts() + 1, "cannot reach ZooKeeper yet; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = retry.wait() => {}
                    }
                }
            }
        }
    }

    /// The configuration this handle was made from.
    pub fn config(&self) -> &ZkConfig {
        &self.inner.config
    }

    /// The current client, opening a new session first if the old one has expired
    /// or was closed.
    pub async fn client(&self) -> Result<zkc::Client, ZkError> {
        let mut client = self.inner.client.lock().await;
        if is_terminal(client.state()) {
            debug!(state = ?client.state(), "ZooKeeper session ended; opening a new one");
            *client = new_session(&self.inner.config, &self.inner.config.chroot()).await?;
            info!(env = %self.inner.config.env, "opened a new ZooKeeper session");
        }
        Ok(client.clone())
    }

    /// Creates `/{env}` and the top-level znodes of the data model if missing.
    /// Returns the paths it created (empty when everything existed).
    pub async fn bootstrap(&self) -> Result<Vec<String>, ZkError> {
        let config = &self.inner.config;
        let root = new_session(config, "/").await?;
        let chroot = config.chroot();
        let mut created = Vec::new();
        for path in std::iter::once(chroot.clone()).chain(
            bismuth_model::paths::ROOTS
                .iter()
                .map(|p| format!("{chroot}{p}")),
        ) {
            match root.create(&path, &[], &persistent()).await {
                Ok(_) => created.push(path),
                Err(zkc::Error::NodeExists) => {}
                Err(e) => return Err(ZkError::from_client("create", &path, e)),
            }
        }
        Ok(created)
    }

    /// Fails with [`ZkError::NotBootstrapped`] unless `bismuthctl bootstrap` has run.
    pub async fn ensure_bootstrapped(&self) -> Result<(), ZkError> {
        use std::sync::atomic::Ordering;
        if self.inner.bootstrapped.load(Ordering::Relaxed) {
            return Ok(());
        }
        for path in bismuth_model::paths::ROOTS {
            if !self.exists(path).await? {
                return Err(ZkError::NotBootstrapped {
                    env: self.inner.config.env.clone(),
                });
            }
        }
        self.inner.bootstrapped.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the znode exists.
    pub async fn exists(&self, path: &str) -> Result<bool, ZkError> {
        let client = self.client().await?;
        match client.check_stat(path).await {
            Ok(stat) => Ok(stat.is_some()),
            // Below a chroot that does not exist yet, nothing exists.
            Err(zkc::Error::NoNode) => Ok(false),
            Err(e) => Err(ZkError::from_client("stat", path, e)),
        }
    }

    /// Whether the session is connected to a server now (without opening a
    /// new one): `false` while disconnected, and once it has ended.
    pub async fn is_connected(&self) -> bool {
        let client = self.inner.client.lock().await;
        matches!(
            client.state(),
            zkc::SessionState::SyncConnected | zkc::SessionState::ConnectedReadOnly
        )
    }

    /// Tells `report` whether the session is connected each time the
    /// connection's state changes, as the client sees it (so a server that
    /// goes away is known before the next request waits on it), and at least
    /// every second; an ended session is replaced and followed in turn.
    /// Returns when `report` returns `false`.
    pub async fn follow_connection(&self, mut report: impl FnMut(bool) -> bool) {
        const TICK: Duration = Duration::from_secs(1);
        loop {
            let client = match self.client().await {
                Ok(client) => client,
                Err(e) => {
                    debug!(error = %e, "no ZooKeeper session");
                    if !report(false) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut watcher = client.state_watcher();
            let mut state = watcher.state();
            loop {
                let up = matches!(
                    state,
                    zkc::SessionState::SyncConnected | zkc::SessionState::ConnectedReadOnly
                );
                if !report(up) {
                    return;
                }
                if is_terminal(state) {
                    break;
                }
                if let Ok(next) = tokio::time::timeout(TICK, watcher.changed()).await {
                    state = next;
                }
            }
        }
    }

    /// Whether `path` is an ephemeral znode held by this handle's current
    /// session (`false` if it does not exist or another session holds it).
    pub async fn holds(&self, path: &str) -> Result<bool, ZkError> {
        let client = self.client().await?;
        match client.check_stat(path).await {
            Ok(stat) => Ok(stat.is_some_and(|s| s.ephemeral_owner == client.session_id().0)),
            Err(zkc::Error::NoNode) => Ok(false),
            Err(e) => Err(ZkError::from_client("stat", path, e)),
        }
    }

    /// Reads a znode's data with its last modification time (milliseconds
    /// since the Unix epoch), `None` if it does not exist.
    pub async fn get_modified(&self, path: &str) -> Result<Option<(Vec<u8>, i64)>, ZkError> {
        let client = self.client().await?;
        match client.get_data(path).await {
            Ok((data, stat)) => Ok(Some((data, stat.mtime))),
            Err(zkc::Error::NoNode) => Ok(None),
            Err(e) => Err(ZkError::from_client("get", path, e)),
        }
    }

    /// Reads a znode's data and version.
    pub async fn get(&self, path: &str) -> Result<Versioned<Vec<u8>>, ZkError> {
        let client = self.client().await?;
        let (data, stat) = client
            .get_data(path)
            .await
            .map_err(|e| ZkError::from_client("get", path, e))?;
        Ok(Versioned {
            value: data,
            version: stat.version,
        })
    }

    /// Reads a znode's data, `None` if it does not exist.
    pub async fn get_opt(&self, path: &str) -> Result<Option<Versioned<Vec<u8>>>, ZkError> {
        match self.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(ZkError::NoNode { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists a znode's children, sorted.
    pub async fn children(&self, path: &str) -> Result<Vec<String>, ZkError> {
        let client = self.client().await?;
        let mut children = client
            .list_children(path)
            .await
            .map_err(|e| ZkError::from_client("list", path, e))?;
        children.sort();
        Ok(children)
    }

    /// Lists a znode's children, empty if it does not exist.
    pub async fn children_opt(&self, path: &str) -> Result<Vec<String>, ZkError> {
        match self.children(path).await {
            Err(ZkError::NoNode { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// Reads many znodes in few round trips (multi-read, 500 paths each);
    /// `None` for those that do not exist. Results are in `paths` order.
    pub async fn get_many(
        &self,
        paths: &[String],
    ) -> Result<Vec<Option<Versioned<Vec<u8>>>>, ZkError> {
        let client = self.client().await?;
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(MULTI_READ_CHUNK) {
            let mut reader = client.new_multi_reader();
            for p in chunk {
                reader
                    .add_get_data(p)
                    .map_err(|e| ZkError::from_client("get", p, e))?;
            }
            let results = reader
                .commit()
                .await
                .map_err(|e| ZkError::from_client("multi-read", &chunk[0], e))?;
            for (p, r) in chunk.iter().zip(results) {
                out.push(match r {
                    zkc::MultiReadResult::Data { data, stat } => Some(Versioned {
                        value: data,
                        version: stat.version,
                    }),
                    zkc::MultiReadResult::Error {
                        err: zkc::Error::NoNode,
                    } => None,
                    zkc::MultiReadResult::Error { err } => {
                        return Err(ZkError::from_client("get", p, err))
                    }
                    other => {
                        return Err(ZkError::Corrupt {
                            path: p.clone(),
                            reason: format!("unexpected multi-read result {other:?}"),
                        })
                    }
                });
            }
        }
        Ok(out)
    }

    /// Lists the children of many znodes in few round trips; a missing znode
    /// has no children. Results are in `paths` order, each sorted.
    pub async fn children_many(&self, paths: &[String]) -> Result<Vec<Vec<String>>, ZkError> {
        let client = self.client().await?;
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(MULTI_READ_CHUNK) {
            let mut reader = client.new_multi_reader();
            for p in chunk {
                reader
                    .add_get_children(p)
                    .map_err(|e| ZkError::from_client("list", p, e))?;
            }
            let results = reader
                .commit()
                .await
                .map_err(|e| ZkError::from_client("multi-read", &chunk[0], e))?;
            for (p, r) in chunk.iter().zip(results) {
                out.push(match r {
                    zkc::MultiReadResult::Children { mut children } => {
                        children.sort();
                        children
                    }
                    zkc::MultiReadResult::Error {
                        err: zkc::Error::NoNode,
                    } => Vec::new(),
                    zkc::MultiReadResult::Error { err } => {
                        return Err(ZkError::from_client("list", p, err))
                    }
                    other => {
                        return Err(ZkError::Corrupt {
                            path: p.clone(),
                            reason: format!("unexpected multi-read result {other:?}"),
                        })
                    }
                });
            }
        }
        Ok(out)
    }

    /// Creates a persistent znode.
    pub async fn create(&self, path: &str, data: &[u8]) -> Result<(), ZkError> {
        let client = self.client().await?;
        client
            .create(path, data, &persistent())
            .await
            .map_err(|e| ZkError::from_client("create", path, e))?;
        Ok(())
    }

    /// Creates an ephemeral znode, removed by ZooKeeper when this session ends.
    pub async fn create_ephemeral(&self, path: &str, data: &[u8]) -> Result<(), ZkError> {
        let client = self.client().await?;
        client
            .create(path, data, &ephemeral())
            .await
            .map_err(|e| ZkError::from_client("create", path, e))?;
        Ok(())
    }

    /// Sets a znode's data if its version is still `version` (`None`: any version).
    pub async fn set(&self, path: &str, data: &[u8], version: Option<i32>) -> Result<i32, ZkError> {
        let client = self.client().await?;
        let stat = client
            .set_data(path, data, version)
            .await
            .map_err(|e| ZkError::from_client("set", path, e))?;
        Ok(stat.version)
    }

    /// Deletes a znode if its version is still `version` (`None`: any version).
    pub async fn delete(&self, path: &str, version: Option<i32>) -> Result<(), ZkError> {
        let client = self.client().await?;
        client
            .delete(path, version)
            .await
            .map_err(|e| ZkError::from_client("delete", path, e))
    }

    /// Read-modify-write with optimistic concurrency: reads `path`, calls `f`
    /// with its current data (`None` if absent), and writes the result back
    /// with a version check, retrying when another writer got there first.
    /// `f` returning `Ok(None)` leaves the znode as it is.
    pub async fn update<F, E>(&self, path: &str, mut f: F) -> Result<Option<Vec<u8>>, E>
    where
        F: FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>, E>,
        E: From<ZkError>,
    {
        const ATTEMPTS: u32 = 20;
        for attempt in 0..ATTEMPTS {
            let current = self.get_opt(path).await?;
            let Some(new) = f(current.as_ref().map(|v| v.value.as_slice()))? else {
                return Ok(None);
            };
            let result = match &current {
                Some(v) => self.set(path, &new, Some(v.version)).await.map(|_| ()),
                None => self.create(path, &new).await,
            };
            match result {
                Ok(()) => return Ok(Some(new)),
                Err(
                    ZkError::BadVersion { .. }
                    | ZkError::NodeExists { .. }
                    | ZkError::NoNode { .. },
                ) => {
                    debug!(path, attempt, "concurrent update; retrying");
                    backoff(attempt).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ZkError::Contended {
            path: path.to_owned(),
            attempts: ATTEMPTS,
        }
        .into())
    }
}

/// Delays before retrying a lost optimistic-concurrency race: 10 ms
/// doubling to 640 ms, jittered so racing writers do not collide again.
pub const CONTENTION: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(640));

/// Sleeps [`CONTENTION`]'s delay for retry number `attempt`.
pub async fn backoff(attempt: u32) {
    tokio::time::sleep(CONTENTION.delay(attempt)).await;
}

fn is_terminal(state: zkc::SessionState) -> bool {
    matches!(
        state,
        zkc::SessionState::Expired | zkc::SessionState::Closed | zkc::SessionState::AuthFailed
    )
}

/// Opens a session, retrying refused connections (a server that is still
/// starting) until the connect timeout runs out.
async fn new_session(config: &ZkConfig, chroot: &str) -> Result<zkc::Client, ZkError> {
    let servers = config.servers_string();
    let connect_string = if chroot == "/" {
        servers.clone()
    } else {
        format!("{servers}{chroot}")
    };
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let mut attempt = 0;
    loop {
        let mut connector = zkc::Client::connector();
        if config.detached {
            connector = connector.with_detached();
        }
        let connect = connector
            .with_session_timeout(config.session_timeout)
            .with_connection_timeout(config.connect_timeout)
            .with_fail_eagerly()
            .connect(&connect_string);
        let reason = match tokio::time::timeout_at(deadline, connect).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(zkc::Error::NoHosts)) => "no server accepted a connection".to_owned(),
            Ok(Err(e)) => {
                return Err(ZkError::Connect {
                    servers,
                    reason: e.to_string(),
                })
            }
            Err(_) => format!("no session within {:?}", config.connect_timeout),
        };
        attempt += 1;
        let retry_at = tokio::time::Instant::now() + Duration::from_millis(100 * attempt.min(5));
        if retry_at >= deadline {
            return Err(ZkError::Connect {
                servers,
                reason: format!("{reason} (tried for {:?})", config.connect_timeout),
            });
        }
        debug!(%reason, attempt, "ZooKeeper connection failed; retrying");
        tokio::time::sleep_until(retry_at).await;
    }
}
