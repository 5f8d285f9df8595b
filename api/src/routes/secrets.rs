//! `PUT/DELETE /function/{id}/secrets/{key}`: write a function's secrets into
//! the svcprovider store of its service group, through svcprovider's own
//! store code. No endpoint ever returns a secret.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use bismuth_zk::store::functions;
use bytes::Bytes;
use svcprovider::config::{StoreArgs, StoreUrl};
use svcprovider::store::{postgres::PgStore, sqlite::SqliteStore, Quotas, Storage, StoreError};

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
    svcprovider::key::validate(key).map_err(ApiError::BadRequest)?;
    let def = functions::get_function(state.zk()?, id).await?;
    let group = def.value.service_group(id).to_string();
    let config = state.config();
    let args = StoreArgs {
        group: group.clone(),
        store: config.svc_store.clone(),
        secret_key_file: config.secret_key_file.clone(),
    };
    let (url, cluster_key) = args
        .parse()
        .map_err(|e| ApiError::Unavailable(format!("secret store: {e}")))?;
    if cluster_key.is_none() {
        return Err(ApiError::Unavailable(
            "secrets are not configured: start the api with --secret-key-file".into(),
        ));
    }
    let result = match url {
        StoreUrl::Sqlite(dir) => {
            let store = SqliteStore::open(&dir, &group, Quotas::default(), cluster_key)
                .map_err(store_error)?;
            apply(&store, key, value).await
        }
        StoreUrl::Postgres(url) => {
            let store = PgStore::connect(&url, &group, Quotas::default(), cluster_key)
                .await
                .map_err(store_error)?;
            apply(&store, key, value).await
        }
    };
    result.map_err(store_error)
}

async fn apply(store: &impl Storage, key: &str, value: Option<Bytes>) -> Result<bool, StoreError> {
    match value {
        Some(v) => store.secret_put(key, v).await.map(|()| true),
        None => store.secret_delete(key).await,
    }
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Backend(_) | StoreError::NoSecretKey => ApiError::Unavailable(e.to_string()),
        other => ApiError::Internal(other.to_string()),
    }
}
