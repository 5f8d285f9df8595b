//! `GET /function/{id}/calls?limit=N`: the function's last invocations,
//! gathered from every alive node's `/calls/{id}` (records stay on the node
//! that served them, bounded per function), newest first.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use bismuth_model::{Calls, FunctionId};
use bismuth_zk::store::functions;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::task::JoinSet;

use super::function_id;
use crate::error::ApiError;
use crate::state::AppState;

/// Records returned when no limit is given.
const DEFAULT_LIMIT: usize = 100;
/// The most records one call returns (a node keeps 1000 per function).
const MAX_LIMIT: usize = 1000;

/// `GET /function/{id}/calls`.
pub async fn calls(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Calls>, ApiError> {
    let id = function_id(&id)?;
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit must be an integer from 1 to {MAX_LIMIT}, not {raw:?}"
                ))
            })?,
    };
    let zk = state.zk()?;
    functions::get_function(zk, id).await?;
    let nodes = crate::deploy::nodes(zk).await?;
    let mut fetches = JoinSet::new();
    for node in nodes.into_iter().filter(|n| n.alive) {
        let state = state.clone();
        fetches.spawn(async move { fetch(&state, node.ip, id, limit).await });
    }
    let mut calls = Vec::new();
    while let Some(done) = fetches.join_next().await {
        match done {
            Ok(Ok(mut c)) => calls.append(&mut c.calls),
            Ok(Err(e)) => {
                tracing::warn!(function = %id, error = %e, "cannot read a node's call records")
            }
            Err(_) => {}
        }
    }
    // RFC 3339 in UTC with a fixed width sorts as text.
    calls.sort_by(|a, b| b.start.cmp(&a.start));
    calls.truncate(limit);
    Ok(Json(Calls { calls }))
}

async fn fetch(
    state: &AppState,
    ip: std::net::Ipv4Addr,
    id: FunctionId,
    limit: usize,
) -> Result<Calls, String> {
    let url = format!(
        "http://{ip}:{}/calls/{id}?limit={limit}",
        state.config().bismuthd_port
    );
    let req = http::Request::get(&url)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), state.http().request(req))
        .await
        .map_err(|_| format!("bismuthd on {ip} did not answer within 5 s"))?
        .map_err(|e| format!("bismuthd on {ip}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("bismuthd on {ip} answered {}", resp.status()));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("bismuthd on {ip}: {e}"))
}
