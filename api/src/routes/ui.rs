//! The dashboard at `/ui/`: three static files built into the binary
//! (`api/ui/`: HTML, CSS, plain JavaScript, no framework), which read
//! `/stats`, `/function/…` and the log stream like any client. With
//! `--auth-token` the browser signs in once at `/ui/login`: the token
//! becomes an HttpOnly, SameSite=Strict cookie the api accepts like the
//! bearer header (see `auth` in this module's parent).

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::state::AppState;

const INDEX: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

/// The cookie holding the token (hex-encoded, so any token fits a cookie).
pub const COOKIE: &str = "bismuth_token";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui` → `/ui/`.
pub async fn root() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`.
pub async fn index() -> Response {
    let mut resp = asset("text/html; charset=utf-8", INDEX);
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    resp
}

/// `GET /ui/app.js`.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/app.css`.
pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// `GET /ui/login`: the sign-in form (straight to the dashboard when the
/// api wants no token).
pub async fn login_form(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    if state.config().auth_token.is_none() {
        return Redirect::to("/ui/").into_response();
    }
    login_page(StatusCode::OK, "")
}

/// `POST /ui/login` with `token=…` (a form): sets the cookie when right.
pub async fn login(
    axum::extract::State(state): axum::extract::State<AppState>,
    body: axum::body::Bytes,
) -> Response {
    let Some(token) = &state.config().auth_token else {
        return Redirect::to("/ui/").into_response();
    };
    let given = form_field(&body, "token").unwrap_or_default();
    if !same(given.as_bytes(), token.as_bytes()) {
        return login_page(StatusCode::UNAUTHORIZED, "That is not the api's token.");
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        hex::encode(token)
    );
    let mut resp = Redirect::to("/ui/").into_response();
    if let Ok(v) = header::HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

fn login_page(status: StatusCode, error: &str) -> Response {
    let error = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\">{error}</p>")
    };
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Bismuth: sign in</title>
<link rel="stylesheet" href="/ui/app.css"></head><body><header><span class="brand">Bismuth</span></header>
<main><h1>Sign in</h1><p class="muted">This api wants its token (the api's <code>--auth-token</code>, <code>BISMUTH_API_TOKEN</code>).</p>{error}
<form method="post" action="/ui/login"><input type="password" name="token" autofocus size="40"> <button>Sign in</button></form></main></body></html>"#
    );
    (status, Html(html)).into_response()
}

/// The token a request carries: the bearer header, else the cookie.
pub fn token_of(headers: &HeaderMap) -> Option<Vec<u8>> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.as_bytes().to_vec());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .and_then(|(_, v)| hex::decode(v).ok())
}

/// Compares in time independent of where the two differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_token_from_header_or_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=b; {COOKIE}={}", hex::encode("s3cret"))
                .parse()
                .unwrap(),
        );
        assert_eq!(token_of(&h).as_deref(), Some(&b"s3cret"[..]));
        h.insert(header::AUTHORIZATION, "Bearer other".parse().unwrap());
        assert_eq!(token_of(&h).as_deref(), Some(&b"other"[..]));
        assert_eq!(token_of(&HeaderMap::new()), None);
    }

    #[test]
    fn decodes_form_fields() {
        assert_eq!(
            form_field(b"token=a%2Bb+c%", "token").as_deref(),
            Some("a+b c%")
        );
        assert_eq!(form_field(b"x=1", "token"), None);
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
