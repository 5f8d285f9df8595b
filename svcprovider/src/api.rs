//! The HTTP API a function calls, exactly as DESIGN.md: `/kv/v1/{key}`,
//! `/secrets/v1/{key}` (read-only), `/blob/v1/[{key}]`. Every call but
//! `/healthz` needs `Authorization: Bearer {token}`. Errors are JSON
//! `{"error": …}`; store errors map to statuses in [`status_of`].

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use tracing::warn;

use crate::key;
use crate::store::{PutMode, Storage, StoreError};

/// Response body: small buffers or a streamed blob.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Shared by every request of one svcprovider.
#[derive(Debug)]
pub struct Api<S> {
    store: S,
    token: String,
    max_value_bytes: usize,
}

impl<S: Storage> Api<S> {
    /// An API over `store`, accepting `token`, with K/V values up to `max_value_bytes`.
    pub fn new(store: S, token: String, max_value_bytes: usize) -> Arc<Self> {
        Arc::new(Api {
            store,
            token,
            max_value_bytes,
        })
    }

    /// Answers one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        if path == "/healthz" {
            return text(StatusCode::OK, "OK");
        }
        if !self.authorized(&req) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let result = if let Some(k) = path.strip_prefix("/kv/v1/") {
            self.kv(req, k).await
        } else if let Some(k) = path.strip_prefix("/secrets/v1/") {
            self.secret(req.method(), k).await
        } else if path == "/blob/v1/" || path == "/blob/v1" {
            self.blob_list(req.method()).await
        } else if let Some(k) = path.strip_prefix("/blob/v1/") {
            self.blob(req, k).await
        } else {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no endpoint {path}"),
            ))
        };
        result.unwrap_or_else(ApiError::into_response)
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), self.token.as_bytes())
    }

    async fn kv(&self, req: Request<Incoming>, key: &str) -> Result<Response<Body>, ApiError> {
        check_key(key)?;
        match *req.method() {
            Method::GET => match self.store.kv_get(key).await.map_err(store_error)? {
                Some(v) => Ok(bytes(v)),
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("key {key:?} not found"),
                )),
            },
            Method::POST | Method::PUT => {
                let value = read_limited(req.into_body(), self.max_value_bytes).await?;
                self.store.kv_put(key, value).await.map_err(store_error)?;
                Ok(empty(StatusCode::OK))
            }
            Method::DELETE => match self.store.kv_delete(key).await.map_err(store_error)? {
                true => Ok(empty(StatusCode::OK)),
                false => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("key {key:?} not found"),
                )),
            },
            _ => Err(not_allowed("GET, POST, DELETE")),
        }
    }

    async fn secret(&self, method: &Method, key: &str) -> Result<Response<Body>, ApiError> {
        check_key(key)?;
        if method != Method::GET {
            return Err(ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                message: "secrets are read-only to functions; set them through the control plane"
                    .into(),
                allow: Some("GET"),
            });
        }
        match self.store.secret_get(key).await.map_err(store_error)? {
            Some(v) => Ok(bytes(v)),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("secret {key:?} not found"),
            )),
        }
    }

    async fn blob_list(&self, method: &Method) -> Result<Response<Body>, ApiError> {
        if method != Method::GET {
            return Err(not_allowed("GET"));
        }
        let keys = self.store.blob_list().await.map_err(store_error)?;
        let mut r = full(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&keys).unwrap_or_default()),
        );
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(r)
    }

    async fn blob(&self, req: Request<Incoming>, key: &str) -> Result<Response<Body>, ApiError> {
        check_key(key)?;
        let mode = match *req.method() {
            Method::GET => {
                let Some(blob) = self.store.blob_get(key).await.map_err(store_error)? else {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("blob {key:?} not found"),
                    ));
                };
                let body = StreamBody::new(blob.stream.map_ok(Frame::data));
                let mut r = Response::new(BodyExt::boxed_unsync(body));
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(blob.size));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                return Ok(r);
            }
            Method::DELETE => {
                return match self.store.blob_delete(key).await.map_err(store_error)? {
                    true => Ok(empty(StatusCode::OK)),
                    false => Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("blob {key:?} not found"),
                    )),
                };
            }
            Method::POST => PutMode::Create,
            Method::PUT => PutMode::Replace,
            _ => return Err(not_allowed("GET, POST, PUT, DELETE")),
        };
        let stream = req
            .into_body()
            .into_data_stream()
            .map_err(std::io::Error::other);
        self.store
            .blob_put(key, mode, Box::pin(stream))
            .await
            .map_err(store_error)?;
        Ok(empty(StatusCode::OK))
    }
}

/// The HTTP status for a store error.
pub fn status_of(e: &StoreError) -> StatusCode {
    match e {
        StoreError::Exists(_) => StatusCode::CONFLICT,
        StoreError::Missing(_) => StatusCode::NOT_FOUND,
        StoreError::Quota { .. } => StatusCode::INSUFFICIENT_STORAGE,
        StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        StoreError::Body(_) => StatusCode::BAD_REQUEST,
        StoreError::NoSecretKey | StoreError::Backend(_) => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::Crypto(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn store_error(e: StoreError) -> ApiError {
    let status = status_of(&e);
    if matches!(e, StoreError::Backend(_) | StoreError::Crypto(_)) {
        warn!(error = %e, "store operation failed");
    }
    ApiError::new(status, e.to_string())
}

fn check_key(key: &str) -> Result<(), ApiError> {
    key::validate(key).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))
}

async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("value is larger than the {limit}-byte limit"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("cannot read request body: {e}"),
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn full(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r
}

fn bytes(v: Bytes) -> Response<Body> {
    let mut r = full(StatusCode::OK, v);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

fn empty(status: StatusCode) -> Response<Body> {
    full(status, Bytes::new())
}

fn text(status: StatusCode, t: &'static str) -> Response<Body> {
    full(status, Bytes::from_static(t.as_bytes()))
}

fn not_allowed(allow: &'static str) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("method not allowed; use {allow}"),
        allow: Some(allow),
    }
}

/// A failed request: its status and message, rendered by [`ApiError::into_response`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: String) -> Self {
        ApiError {
            status,
            message,
            allow: None,
        }
    }

    /// The JSON error response.
    pub fn into_response(self) -> Response<Body> {
        let mut r = error(self.status, self.message);
        if let Some(allow) = self.allow {
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        r
    }
}

/// A JSON error: `{"error": "…"}`.
pub fn error(status: StatusCode, message: String) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut r = full(status, Bytes::from(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
