//! `GET /node`: nodes with state, liveness, capacity and load;
//! `POST /node/{ip}/drain` (`{"evacuate": true}` to move its instances
//! away) and `POST /node/{ip}/undrain`; `GET /controller`.

use std::net::Ipv4Addr;

use axum::extract::{Path, State};
use axum::Json;
use bismuth_zk::store::nodes;
use bytes::Bytes;
use serde::Deserialize;

use crate::cluster::NodeView;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /node`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<NodeView>>, ApiError> {
    Ok(Json(crate::deploy::nodes(state.zk()?).await?))
}

/// `GET /controller`: which api process leads the controller, and whether
/// it is this one.
pub async fn controller(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let leader = crate::controller::leader::holder(state.zk()?).await?;
    let this = leader
        .as_ref()
        .is_some_and(|l| l.id == state.candidate().id);
    Ok(Json(serde_json::json!({
        "leader": leader,
        "this_process": state.candidate(),
        "this_process_leads": this,
    })))
}

/// The body of `POST /node/{ip}/drain` (optional).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Also move the node's instances to other nodes, replacements first.
    #[serde(default)]
    pub evacuate: bool,
}

fn node_ip(raw: &str) -> Result<Ipv4Addr, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("{raw:?} is not a node address")))
}

/// `POST /node/{ip}/drain`: no new containers there; with `evacuate`, its
/// instances move (the controller does it; `GET /node` shows progress).
/// 409 when the other nodes have no room for them (nothing is changed).
pub async fn drain(
    State(state): State<AppState>,
    Path(ip): Path<String>,
    body: Bytes,
) -> Result<Json<NodeView>, ApiError> {
    let ip = node_ip(&ip)?;
    let req: DrainRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DrainRequest::default()
    } else {
        crate::error::parse_json(&body)?
    };
    let zk = state.zk()?;
    if req.evacuate {
        if let Some(why) = nodes::evacuation_shortfall(zk, ip).await? {
            return Err(ApiError::Conflict(format!(
                "cannot evacuate {ip}: {why}; nothing was changed"
            )));
        }
    }
    nodes::drain(zk, ip, req.evacuate).await?;
    view(&state, ip).await
}

/// `POST /node/{ip}/undrain`: schedulable again; an evacuation ends.
pub async fn undrain(
    State(state): State<AppState>,
    Path(ip): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let ip = node_ip(&ip)?;
    nodes::undrain(state.zk()?, ip).await?;
    view(&state, ip).await
}

async fn view(state: &AppState, ip: Ipv4Addr) -> Result<Json<NodeView>, ApiError> {
    crate::deploy::nodes(state.zk()?)
        .await?
        .into_iter()
        .find(|n| n.ip == ip)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("node {ip} is not provisioned")))
}
