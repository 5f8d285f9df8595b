//! Every error the api returns, and the one place that maps each to an HTTP
//! status and a JSON body `{"error": "…"}`. Client mistakes are 4xx; a
//! ZooKeeper outage is 503; nothing a client sends produces a 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bismuth_zk::store::StoreError;
use bismuth_zk::ZkError;
use uuid::Uuid;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON or has the wrong shape.
    #[error("{0}")]
    BadJson(String),
    /// The definition is well-formed but invalid.
    #[error(transparent)]
    Invalid(#[from] bismuth_model::InvalidDefinition),
    /// A bad parameter or key.
    #[error("{0}")]
    BadRequest(String),
    /// No such function (or not a function id).
    #[error("function {0} does not exist")]
    FunctionNotFound(String),
    /// Something else that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A route hostname belongs to another function.
    #[error("route {hostname} already belongs to function {owner}")]
    RouteTaken {
        /// The hostname.
        hostname: String,
        /// The function it routes to.
        owner: Uuid,
    },
    /// No node can take the instances.
    #[error("{0}")]
    NoRoom(String),
    /// The request conflicts with the cluster's state (nothing was changed).
    #[error("{0}")]
    Conflict(String),
    /// A redeploy's new instances did not become Running in time; rolled back.
    #[error("{0}")]
    Timeout(String),
    /// Missing or wrong bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// ZooKeeper (or another dependency) cannot be reached now.
    #[error("{0}")]
    Unavailable(String),
    /// A body over its limit.
    #[error("{0}")]
    TooLarge(String),
    /// A request target over its limit.
    #[error("{0}")]
    UriTooLong(String),
    /// Stored data is corrupt or an invariant broke.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadJson(_) | ApiError::Invalid(_) | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::FunctionNotFound(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::RouteTaken { .. } | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NoRoom(_) | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, %status, "request failed");
        }
        let mut r = (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<ZkError> for ApiError {
    fn from(e: ZkError) -> Self {
        match e {
            ZkError::Connect { .. }
            | ZkError::ConnectionLost { .. }
            | ZkError::NotBootstrapped { .. }
            | ZkError::Contended { .. } => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::FunctionNotFound(id) => ApiError::FunctionNotFound(id.to_string()),
            StoreError::RouteTaken { hostname, owner } => ApiError::RouteTaken { hostname, owner },
            StoreError::Invalid(i) => ApiError::Invalid(i),
            StoreError::NodeNotFound(_) | StoreError::BackendNotFound { .. } => {
                ApiError::NotFound(e.to_string())
            }
            StoreError::NodeExists(_) | StoreError::NodeBusy { .. } => {
                ApiError::BadRequest(e.to_string())
            }
            StoreError::Zk(z) => z.into(),
        }
    }
}

/// Parses a JSON body, naming the field at fault.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::BadJson(format!("invalid JSON: {inner}"))
        } else {
            ApiError::BadJson(format!("invalid JSON at {path}: {inner}"))
        }
    })?;
    // One JSON value, nothing after it but whitespace.
    de.end()
        .map_err(|e| ApiError::BadJson(format!("invalid JSON: {e} after the object")))?;
    Ok(value)
}

/// The largest function definition accepted: ZooKeeper refuses a request
/// over 1 MiB (`jute.maxbuffer`), and a create writes the definition in one
/// transaction beside its backends and routes.
pub const MAX_DEFINITION_BYTES: usize = 512 * 1024;

/// 413 for a definition over [`MAX_DEFINITION_BYTES`].
pub fn check_definition_size(body: &[u8]) -> Result<(), ApiError> {
    if body.len() > MAX_DEFINITION_BYTES {
        return Err(ApiError::TooLarge(format!(
            "the definition is {} bytes; the limit is {MAX_DEFINITION_BYTES} bytes (512 KiB)",
            body.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bismuth_model::FunctionDefinition;

    #[test]
    fn json_errors_name_the_field() {
        let body = br#"{"image": "busybox", "cpu": 1, "memory": 8388608, "invoke_mode": {"Server": [["/x"], 70000]}}"#;
        let e = parse_json::<FunctionDefinition>(body)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("invalid JSON at invoke_mode.Server[1]:"),
            "{e}"
        );
        let e = parse_json::<FunctionDefinition>(b"{not json")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid JSON"), "{e}");
        let e = parse_json::<FunctionDefinition>(br#"{"image": 5}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("image"), "{e}");
    }

    #[test]
    fn bytes_after_the_object_are_refused() {
        let ok = br#"{"image": "busybox", "cpu": 1, "memory": 8388608, "invoke_mode": {"Executable": ["/bin/cat"]}}"#;
        assert!(parse_json::<FunctionDefinition>(ok).is_ok());
        let mut trailing = ok.to_vec();
        trailing.extend_from_slice(b"  \n");
        assert!(parse_json::<FunctionDefinition>(&trailing).is_ok());
        for junk in [&b"xx"[..], b"{}", b"]"] {
            let mut body = ok.to_vec();
            body.extend_from_slice(junk);
            let e = parse_json::<FunctionDefinition>(&body).unwrap_err();
            assert!(e.to_string().contains("after the object"), "{e}");
        }
    }
}
