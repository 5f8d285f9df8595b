//! `POST/GET /function`, `GET/PUT/DELETE /function/{id}`.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use bismuth_model::{FunctionDefinition, FunctionView};
use bismuth_zk::store::functions;
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

/// A page of `GET /function?limit=N[&cursor=C]`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Page {
    /// Up to `limit` functions, in id order.
    pub functions: Vec<Listed>,
    /// Pass as `cursor` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The most functions one page holds.
pub const MAX_PAGE: usize = 1000;

/// `GET /function`: every function with its backends (a JSON array, as the
/// original api answered), or, with `limit` (1–1000) and optionally the
/// `cursor` a previous page returned, one page in id order. Read with
/// batched multi-reads: a few round trips however many functions.
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let zk = state.zk()?;
    let limit = match query.get("limit") {
        None => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit must be a number from 1 to {MAX_PAGE}, got {v:?}"
                )))
            }
        },
    };
    let after = query.get("cursor").map(|c| cursor::decode(c)).transpose()?;
    let mut ids = functions::list_function_ids(zk).await?;
    ids.sort();
    if limit.is_none() && after.is_none() {
        let all = functions::describe_many(zk, &ids).await?;
        let listed: Vec<Listed> = all
            .into_iter()
            .map(|(id, view)| Listed { id, view })
            .collect();
        return Ok(Json(listed).into_response());
    }
    let limit = limit.unwrap_or(100);
    let start = after.map_or(0, |a| ids.partition_point(|id| *id <= a));
    let page = &ids[start..ids.len().min(start + limit)];
    let more = start + page.len() < ids.len();
    let functions: Vec<Listed> = functions::describe_many(zk, page)
        .await?
        .into_iter()
        .map(|(id, view)| Listed { id, view })
        .collect();
    let next = (more && !page.is_empty()).then(|| cursor::encode(page[page.len() - 1]));
    Ok(Json(Page { functions, next }).into_response())
}

/// The paging cursor: opaque to clients (today the last id of a page, as
/// `f1.` and its 32 hex digits; the prefix is its version).
mod cursor {
    use crate::error::ApiError;
    use uuid::Uuid;

    pub fn encode(last: Uuid) -> String {
        format!("f1.{}", last.simple())
    }

    pub fn decode(cursor: &str) -> Result<Uuid, ApiError> {
        cursor
            .strip_prefix("f1.")
            .filter(|hex| hex.len() == 32)
            .and_then(|hex| Uuid::try_parse(hex).ok())
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "cursor {cursor:?} is not one this api gave out (use the \"next\" of the previous page)"
                ))
            })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trips_and_refuses_others() {
            let id = uuid::Uuid::new_v4();
            assert_eq!(super::decode(&super::encode(id)).unwrap(), id);
            for bad in [
                "",
                "f1.",
                "f1.xyz",
                "f2.00000000000000000000000000000000",
                "garbage",
            ] {
                assert!(super::decode(bad).is_err(), "{bad}");
            }
        }
    }
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
