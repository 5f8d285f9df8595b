//! `PUT/DELETE /function/{id}/secrets/{key}`: write a function's secrets into
//! the svcprovider store of its service group, through the one
//! `SecretWriter` the api opens (`bismuth-svcstore`). No endpoint ever
//! returns a secret.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use bismuth_svcstore::StoreError;
use bismuth_zk::store::functions;
use bytes::Bytes;

use super::function_id;
use crate::error::ApiError;
use crate::state::AppState;

/// Largest secret accepted.
const MAX_SECRET: usize = 64 * 1024;

/// `PUT /function/{id}/secrets/{key}`: the body is the value.
pub async fn put(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    if body.len() > MAX_SECRET {
        return Err(ApiError::BadRequest(format!(
            "a secret may be at most {MAX_SECRET} bytes"
        )));
    }
    secret_op(&state, &id, &key, Some(body)).await?;
    Ok(StatusCode::OK)
}

/// `DELETE /function/{id}/secrets/{key}`.
pub async fn delete(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if secret_op(&state, &id, &key, None).await? {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::NotFound(format!("secret {key:?} does not exist")))
    }
}

async fn secret_op(
    state: &AppState,
    id: &str,
    key: &str,
    value: Option<Bytes>,
) -> Result<bool, ApiError> {
    let id = function_id(id)?;
    bismuth_svcstore::key::validate(key).map_err(ApiError::BadRequest)?;
    let def = functions::get_function(state.zk()?, id).await?;
    let group = def.value.service_group(id).to_string();
    let writer = state.secrets().await?;
    let result = match value {
        Some(v) => writer.put(&group, key, v).await.map(|()| true),
        None => writer.delete(&group, key).await,
    };
    result.map_err(store_error)
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Backend(_) | StoreError::NoSecretKey => ApiError::Unavailable(e.to_string()),
        other => ApiError::Internal(other.to_string()),
    }
}
