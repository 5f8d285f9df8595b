//! `GET /stats` and `GET /stats/function/{id}`: the live figures of
//! [`crate::stats`] (asking starts its sampler; the first answers have no
//! rates until two samples exist, `INTERVAL` apart).

use axum::extract::{Path, State};
use axum::Json;

use super::function_id;
use crate::error::ApiError;
use crate::state::AppState;
use crate::stats::{History, Summary};

/// `GET /stats`.
pub async fn summary(State(state): State<AppState>) -> Result<Json<Summary>, ApiError> {
    let zk = state.zk()?;
    state.stats().touch(&state);
    let nodes = crate::cluster::read_nodes(zk).await?;
    let view = state.view().lock();
    Ok(Json(state.stats().summary(&view, nodes)))
}

/// `GET /stats/function/{id}`.
pub async fn function(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<History>, ApiError> {
    let id = function_id(&id)?;
    state.zk()?;
    let view = state.view().lock();
    if !view.functions.contains_key(&id) {
        return Err(ApiError::FunctionNotFound(id.to_string()));
    }
    state.stats().touch(&state);
    Ok(Json(state.stats().history(&view, id)))
}
