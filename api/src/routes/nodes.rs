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
