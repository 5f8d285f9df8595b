//! The HTTP client of bismuthctl's api verbs: where the api and the
//! frontend are (`--api`/`BISMUTH_API`, `--fe`/`BISMUTH_FE`), the bearer
//! token (`BISMUTH_API_TOKEN`), and errors that say what to do.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

/// Where the api and the frontend answer, and the token the api wants.
#[derive(Clone, Debug, clap::Args)]
pub struct Endpoints {
    /// The api's URL (api verbs: deploy, describe, logs, calls, top, …)
    #[arg(
        long = "api",
        env = "BISMUTH_API",
        default_value = "http://127.0.0.1:8002",
        global = true,
        value_name = "URL"
    )]
    pub api: String,
    /// The api's bearer token (the api's --auth-token)
    #[arg(
        long,
        env = "BISMUTH_API_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// The frontend's URL (invoke)
    #[arg(
        long = "fe",
        env = "BISMUTH_FE",
        default_value = "http://127.0.0.1:8000",
        global = true,
        value_name = "URL"
    )]
    pub fe: String,
}

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{flag} {url:?} is not an http:// URL ({why})")]
    BadUrl {
        flag: &'static str,
        url: String,
        why: String,
    },
    #[error("cannot reach the {what} at {url}: {cause}; is it running? (set {hint})")]
    Unreachable {
        what: &'static str,
        url: String,
        cause: String,
        hint: &'static str,
    },
    #[error("the {what} at {url} did not answer within {}s", .after.as_secs())]
    Timeout {
        what: &'static str,
        url: String,
        after: Duration,
    },
    #[error("the api wants a token: set BISMUTH_API_TOKEN (or pass --token)")]
    TokenMissing,
    #[error(
        "the api refused the token (BISMUTH_API_TOKEN / --token): it is not the api's --auth-token"
    )]
    TokenRefused,
    /// The api answered an error; `message` is its `{"error": …}`.
    #[error("{message} (HTTP {})", .status.as_u16())]
    Status { status: StatusCode, message: String },
}

impl ClientError {
    /// The exit status: 2 when the request itself was wrong (the api's
    /// 400, 413, 422), 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::BadUrl { .. } => 2,
            ClientError::Status { status, .. }
                if matches!(status.as_u16(), 400 | 413 | 414 | 422) =>
            {
                2
            }
            _ => 1,
        }
    }
}

/// How long an ordinary api call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One server (the api or the frontend) and how to reach it.
#[derive(Clone, Debug)]
pub struct Server {
    what: &'static str,
    hint: &'static str,
    base: String,
    token: Option<HeaderValue>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Endpoints {
    /// The api.
    pub fn api(&self) -> Result<Server, ClientError> {
        let token = match &self.token {
            Some(t) => Some(HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                ClientError::BadUrl {
                    flag: "--token",
                    url: "(hidden)".into(),
                    why: "it holds characters a header cannot".into(),
                }
            })?),
            None => None,
        };
        Server::new("api", "--api or BISMUTH_API", "--api", &self.api, token)
    }

    /// The frontend.
    pub fn fe(&self) -> Result<Server, ClientError> {
        Server::new("frontend", "--fe or BISMUTH_FE", "--fe", &self.fe, None)
    }
}

impl Server {
    fn new(
        what: &'static str,
        hint: &'static str,
        flag: &'static str,
        url: &str,
        token: Option<HeaderValue>,
    ) -> Result<Server, ClientError> {
        let bad = |why: &str| ClientError::BadUrl {
            flag,
            url: url.to_owned(),
            why: why.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(bad(&format!(
                    "{other}:// is not spoken here; put a TLS terminator in front and use http:// on a trusted network"
                )))
            }
            None => return Err(bad("it needs a scheme, e.g. http://127.0.0.1:8002")),
        }
        if uri.host().is_none() {
            return Err(bad("it has no host"));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Ok(Server {
            what,
            hint,
            base: url.trim_end_matches('/').to_owned(),
            token,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The server's URL for `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request and returns the response, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>, ClientError> {
        let url = self.url(path);
        let mut req = Request::builder()
            .method(method)
            .uri(&url)
            .body(Full::new(body))
            .map_err(|e| ClientError::BadUrl {
                flag: "the path",
                url: url.clone(),
                why: e.to_string(),
            })?;
        req.headers_mut().extend(headers);
        if let Some(token) = &self.token {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, token.clone());
        }
        self.client.request(req).await.map_err(|e| {
            use std::error::Error;
            let mut cause = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                cause = s.to_string();
                source = s.source();
            }
            ClientError::Unreachable {
                what: self.what,
                url: self.base.clone(),
                cause,
                hint: self.hint,
            }
        })
    }

    /// Sends a request to the api; a non-2xx answer is an error carrying
    /// the api's message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ClientError> {
        let send = self.send(method, path, HeaderMap::new(), body);
        let resp =
            tokio::time::timeout(timeout, send)
                .await
                .map_err(|_| ClientError::Timeout {
                    what: self.what,
                    url: self.base.clone(),
                    after: timeout,
                })??;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(if self.token.is_some() {
                ClientError::TokenRefused
            } else {
                ClientError::TokenMissing
            });
        }
        let bytes = tokio::time::timeout(timeout, resp.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(ClientError::Status {
            status,
            message: error_message(&bytes),
        })
    }

    /// A call whose answer is JSON.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<T> {
        self.json_within(method, path, body, CALL_TIMEOUT).await
    }

    /// [`Server::json`] with its own timeout.
    pub async fn json_within<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let resp = self.call(method, path, body, timeout).await?;
        let bytes = tokio::time::timeout(timeout, resp.into_body().collect())
            .await
            .map_err(|_| ClientError::Timeout {
                what: self.what,
                url: self.base.clone(),
                after: timeout,
            })??
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "the {} at {} answered {path} with something that is not the expected JSON ({e}); is {} a Bismuth api?",
                self.what,
                self.base,
                self.base
            )
        })
    }
}

/// The api's `{"error": "…"}`, or the body itself when it is not that.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Error {
        error: String,
    }
    match serde_json::from_slice::<Error>(body) {
        Ok(e) => e.error,
        Err(_) if body.is_empty() => "no message".into(),
        Err(_) => String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(500)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(api: &str) -> Endpoints {
        Endpoints {
            api: api.into(),
            token: None,
            fe: "http://127.0.0.1:8000".into(),
        }
    }

    #[test]
    fn urls_must_be_http() {
        assert!(endpoints("http://127.0.0.1:8002/").api().is_ok());
        for bad in ["127.0.0.1:8002", "https://x:1", "http://", "not a url"] {
            let err = endpoints(bad).api().unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
            assert!(err.to_string().contains("--api"), "{err}");
        }
        let api = endpoints("http://h:1/").api().unwrap();
        assert_eq!(api.url("/function"), "http://h:1/function");
    }

    #[test]
    fn error_messages_come_from_the_api() {
        assert_eq!(
            error_message(br#"{"error":"no such function"}"#),
            "no such function"
        );
        assert_eq!(error_message(b"plain words\n"), "plain words");
        assert_eq!(error_message(b""), "no message");
        let e = ClientError::Status {
            status: StatusCode::BAD_REQUEST,
            message: "bad".into(),
        };
        assert_eq!(
            (e.to_string().as_str(), e.exit_code()),
            ("bad (HTTP 400)", 2)
        );
        let e = ClientError::Status {
            status: StatusCode::NOT_FOUND,
            message: "x".into(),
        };
        assert_eq!(e.exit_code(), 1);
    }
}
