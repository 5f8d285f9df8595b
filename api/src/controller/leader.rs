//! Leader election among api processes: exactly one runs the controller.
//!
//! The leader holds the ephemeral znode `/controller/leader` (its data says
//! who: process id, listen address, since when). Others wait for it to go
//! (its holder's session ended) and try again. A new leader bumps
//! `/controller/epoch` and every write the controller makes checks that
//! epoch's version in the same transaction: a leader that lost its session
//! without noticing (paused, partitioned) and then writes through a new
//! session is fenced off, never two leaders acting at once.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use bismuth_zk::{TreeWatch, WatchEvent, Zk, ZkError};

/// Parent of the election znodes.
pub const CONTROLLER: &str = "/controller";
/// The leader's ephemeral znode.
pub const LEADER: &str = "/controller/leader";
/// Bumped by each new leader; its version is the fencing token.
pub const EPOCH: &str = "/controller/epoch";

/// Who a process is, as written in the leader znode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Candidate {
    /// Random per process.
    pub id: uuid::Uuid,
    /// Where its REST API listens.
    pub addr: String,
    /// When it became leader (RFC 3339), set on election.
    #[serde(default)]
    pub since: String,
}

/// Leadership won: the epoch to check on every write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Term {
    pub epoch: i32,
}

/// Waits until this process leads; `None` on shutdown.
pub async fn campaign(
    zk: &Zk,
    me: &Candidate,
    watch: &mut TreeWatch,
    shutdown: &CancellationToken,
) -> Option<Term> {
    loop {
        match try_lead(zk, me).await {
            Ok(Some(term)) => return Some(term),
            Ok(None) => {}
            Err(e) => warn!(error = %e, "election attempt failed; retrying"),
        }
        // Wait for the holder to go (or for a reconnect: anything may have changed).
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return None,
                e = watch.next() => e?,
            };
            match event {
                WatchEvent::Resync => break,
                WatchEvent::Deleted(p) if p == LEADER => break,
                _ => {}
            }
        }
    }
}

/// One attempt: `Some` when this process now leads.
async fn try_lead(zk: &Zk, me: &Candidate) -> Result<Option<Term>, ZkError> {
    ensure_parent(zk).await?;
    let mut record = me.clone();
    record.since = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let data = serde_json::to_vec(&record).unwrap_or_default();
    match zk.create_ephemeral(LEADER, &data).await {
        Ok(()) => {}
        Err(ZkError::NodeExists { .. }) => {
            // Ours from a create whose answer was lost on a reconnect?
            match holder(zk).await? {
                Some(h) if h.id == me.id => {}
                _ => return Ok(None),
            }
        }
        Err(e) => return Err(e),
    }
    let epoch = bump_epoch(zk).await?;
    info!(epoch, "this api process now runs the controller");
    Ok(Some(Term { epoch }))
}

/// Creates `/controller` and `/controller/epoch` when missing.
async fn ensure_parent(zk: &Zk) -> Result<(), ZkError> {
    for path in [CONTROLLER, EPOCH] {
        match zk.create(path, b"").await {
            Ok(()) | Err(ZkError::NodeExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Increments the epoch's version; returns the new version.
async fn bump_epoch(zk: &Zk) -> Result<i32, ZkError> {
    loop {
        let current = zk.get(EPOCH).await?;
        match zk.set(EPOCH, b"", Some(current.version)).await {
            Ok(v) => return Ok(v),
            Err(ZkError::BadVersion { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The current leader, if any.
pub async fn holder(zk: &Zk) -> Result<Option<Candidate>, ZkError> {
    Ok(zk
        .get_opt(LEADER)
        .await?
        .and_then(|v| serde_json::from_slice(&v.value).ok()))
}

/// Resolves when `term` ends: the leader znode is gone or another's, or
/// the epoch moved on. Check after every reconnect.
pub async fn lost(zk: &Zk, me: &Candidate, term: Term, watch: &mut TreeWatch) {
    loop {
        let Some(event) = watch.next().await else {
            return;
        };
        let check = match &event {
            WatchEvent::Resync => true,
            WatchEvent::Deleted(p) | WatchEvent::Created(p) | WatchEvent::Changed(p) => {
                p == LEADER || p == EPOCH
            }
        };
        if check && !still_leads(zk, me, term).await {
            warn!(epoch = term.epoch, "leadership lost; the controller stops");
            return;
        }
    }
}

/// Whether `me` still holds the leader znode in `term`'s epoch. An error
/// reading counts as still leading: writes are fenced by the epoch anyway,
/// and the next event checks again.
async fn still_leads(zk: &Zk, me: &Candidate, term: Term) -> bool {
    let leader = holder(zk).await;
    let epoch = zk.get_opt(EPOCH).await;
    match (leader, epoch) {
        (Ok(h), Ok(e)) => {
            h.is_some_and(|h| h.id == me.id) && e.is_some_and(|e| e.version == term.epoch)
        }
        _ => true,
    }
}
