//! `GET /node`: nodes with state, liveness, capacity and load.

use axum::extract::State;
use axum::Json;

use crate::cluster::NodeView;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /node`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<NodeView>>, ApiError> {
    Ok(Json(crate::deploy::nodes(state.zk()?).await?))
}
