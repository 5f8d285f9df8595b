//! A redeploy as desired state: `/function/{id}/rollout` says which
//! instances are being replaced, by when, and what to restore if it fails.
//! `PUT /function/{id}` writes it; the controller carries it out (new
//! instances Running before the old ones go; on timeout the new ones go and
//! the previous definition comes back) and records the outcome there, so
//! an api restart in the middle loses nothing.

use bismuth_model::{Backend, FunctionDefinition, FunctionId};
use bismuth_zk::Versioned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Being carried out.
    Running,
    /// The new instances run and the old ones are gone.
    Done,
    /// Not finished in time: the new instances were removed (and the
    /// previous definition restored); the old ones keep serving.
    RolledBack,
}

/// One redeploy of a function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// Names this rollout (a newer PUT writes a new one).
    pub id: Uuid,
    /// The instances to replace.
    pub old: Vec<Backend>,
    /// The definition before this rollout, when it changed it.
    pub previous: Option<FunctionDefinition>,
    /// When it gives up, in milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    pub state: RolloutState,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Rollout {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Reads a rollout znode (`None` when it does not parse).
pub fn decode(raw: &Versioned<Vec<u8>>) -> Option<Versioned<Rollout>> {
    Some(Versioned {
        value: serde_json::from_slice(&raw.value).ok()?,
        version: raw.version,
    })
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// For logs and errors.
pub fn describe(id: FunctionId, r: &Rollout) -> String {
    format!(
        "rollout {} of function {id}: {:?}, {} instance(s) to replace",
        r.id,
        r.state,
        r.old.len()
    )
}
