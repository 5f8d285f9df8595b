//! `POST/GET /function`, `GET/PUT/DELETE /function/{id}`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bismuth_model::{FunctionDefinition, FunctionView};
use bismuth_zk::store::{functions, StoreError};
use bytes::Bytes;
use serde::Serialize;
use uuid::Uuid;

use super::function_id;
use crate::deploy;
use crate::error::{check_definition_size, parse_json, ApiError};
use crate::state::AppState;

/// `POST /function`: `{"id": "…"}`.
pub async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_definition_size(&body)?;
    let def: FunctionDefinition = parse_json(&body)?;
    let id = deploy::create(state.zk()?, &def).await?;
    Ok(Json(serde_json::json!({ "id": id })))
}

/// `GET /function/{id}`.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<FunctionView>, ApiError> {
    let id = function_id(&id)?;
    Ok(Json(functions::describe_function(state.zk()?, id).await?))
}

/// One entry of `GET /function`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Listed {
    /// The function's id.
    pub id: Uuid,
    /// Its definition and backends.
    #[serde(flatten)]
    pub view: FunctionView,
}

/// `GET /function`: every function with its backends.
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Listed>>, ApiError> {
    let zk = state.zk()?;
    let mut out = Vec::new();
    for id in functions::list_function_ids(zk).await? {
        match functions::describe_function(zk, id).await {
            Ok(view) => out.push(Listed { id, view }),
            Err(StoreError::FunctionNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(out))
}

/// `PUT /function/{id}[?timeout_ms=N]`: a new definition, or an empty body to redeploy.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<FunctionView>, ApiError> {
    let id = function_id(&id)?;
    let timeout = match query.get("timeout_ms") {
        Some(v) => Duration::from_millis(v.parse().map_err(|_| {
            ApiError::BadRequest(format!(
                "timeout_ms must be a number of milliseconds, got {v:?}"
            ))
        })?),
        None => state.config().redeploy_timeout,
    };
    check_definition_size(&body)?;
    let new_def = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(parse_json(&body)?)
    };
    Ok(Json(deploy::redeploy(&state, id, new_def, timeout).await?))
}

/// `DELETE /function/{id}`: removes the function, its routes and containers.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = function_id(&id)?;
    functions::delete_function(state.zk()?, id).await?;
    Ok(StatusCode::OK)
}
