//! The HTTP surface: which path and method go to which handler (the
//! dashboard's files under `/ui/` too), and the token check in front of
//! all but `/healthz`, `/openapi.json` and the dashboard's sign-in.

mod calls;
mod functions;
pub use functions::{Listed, Page};
pub use nodes::DrainRequest;
mod logs;
mod nodes;
mod secrets;
mod stats;
mod ui;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;

use crate::error::ApiError;
use crate::state::AppState;

/// Builds the router over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "OK" }))
        .route("/function", get(functions::list).post(functions::create))
        .route(
            "/function/{id}",
            get(functions::get)
                .put(functions::update)
                .delete(functions::delete),
        )
        .route("/function/{id}/logs", get(logs::logs))
        .route("/function/{id}/calls", get(calls::calls))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats::summary))
        .route("/stats/function/{id}", get(stats::function))
        .route(
            "/function/{id}/secrets/{*key}",
            put(secrets::put).delete(secrets::delete),
        )
        .route("/node", get(nodes::list))
        .route("/node/{ip}/drain", axum::routing::post(nodes::drain))
        .route("/node/{ip}/undrain", axum::routing::post(nodes::undrain))
        .route("/controller", get(nodes::controller))
        .route("/ui", get(ui::root))
        .route("/ui/", get(ui::index))
        .route("/ui/app.js", get(ui::app_js))
        .route("/ui/app.css", get(ui::app_css))
        .route("/ui/login", get(ui::login_form).post(ui::login))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(crate::openapi::document()) }),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), count))
        .fallback(|State(state): State<AppState>| async move {
            state.metrics().request("unmatched", 404);
            ApiError::NotFound("no such endpoint".into())
        })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(json_errors))
        .with_state(state)
}

/// The largest request body (definitions are held to less: see
/// `error::MAX_DEFINITION_BYTES`).
const MAX_BODY_BYTES: usize = 2 << 20;
/// The longest request target (path and query).
const MAX_URI_BYTES: usize = 8 << 10;

/// Every error is JSON `{"error": "…"}`, including those the framework
/// answers itself (405, 413) and an over-long URI (414).
async fn json_errors(req: Request, next: Next) -> Response {
    let uri_len = req.uri().to_string().len();
    if uri_len > MAX_URI_BYTES {
        return ApiError::UriTooLong(format!(
            "the request target is {uri_len} bytes; the limit is {MAX_URI_BYTES}"
        ))
        .into_response();
    }
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let message = match status {
        http::StatusCode::METHOD_NOT_ALLOWED => match resp
            .headers()
            .get(http::header::ALLOW)
            .and_then(|v| v.to_str().ok())
        {
            Some(allowed) if !allowed.is_empty() => {
                format!("method not allowed on this path; allowed: {allowed}")
            }
            _ => "method not allowed on this path (the API is described at /openapi.json)".into(),
        },
        http::StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is larger than {MAX_BODY_BYTES} bytes (2 MiB)")
        }
        other => other
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
    };
    let mut json = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    if let Some(allow) = resp.headers().get(http::header::ALLOW) {
        json.headers_mut()
            .insert(http::header::ALLOW, allow.clone());
    }
    json
}

/// `GET /metrics`: Prometheus' text format.
async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics().render(state.zk().ok()).await;
    (
        [(http::header::CONTENT_TYPE, bismuth_metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// Counts every routed request by its route template and status code, and
/// with `--otlp-endpoint` exports a span for it.
async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let mut span = state.tracer().map(|t| {
        let incoming = req
            .headers()
            .get(bismuth_daemon::headers::TRACEPARENT)
            .and_then(|v| v.to_str().ok());
        let route = route.clone().unwrap_or_default();
        let attributes = vec![
            KeyValue::new("http.request.method", req.method().to_string()),
            KeyValue::new("http.route", route),
        ];
        t.hop("api request", SpanKind::Server, incoming, attributes)
            .0
    });
    let resp = next.run(req).await;
    let code = resp.status().as_u16();
    if let Some(span) = span.as_mut() {
        span.status(code);
    }
    if let Some(route) = route {
        state.metrics().request(&route, code);
    }
    resp
}

/// Lets a request through when the api wants no token, or it carries the
/// right one (bearer header, or the dashboard's cookie). A browser without
/// it is sent to the dashboard's sign-in page; anything else gets 401.
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.config().auth_token {
        let path = req.uri().path();
        if !matches!(
            path,
            "/healthz" | "/openapi.json" | "/ui/login" | "/ui/app.css"
        ) {
            let given = ui::token_of(req.headers()).unwrap_or_default();
            if !ui::same(&given, token.as_bytes()) {
                if path == "/ui" || path == "/ui/" {
                    return axum::response::Redirect::to("/ui/login").into_response();
                }
                return ApiError::Unauthorized.into_response();
            }
        }
    }
    next.run(req).await
}

/// Parses a function id from a path; anything else is an unknown function.
pub fn function_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::FunctionNotFound(raw.to_owned()))
}
