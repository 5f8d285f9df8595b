//! `GET /function/{id}/logs[?tail=N][&follow=true]`: the containers' output,
//! fetched from the bismuthd of each backend (`/logs/{container_id}`), each
//! container's last `tail` lines if given. With several backends every line
//! is prefixed with `[container_id]`. With `follow`,
//! new lines stream as Server-Sent Events until the client leaves, which
//! drops the upstream connections with it.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bismuth_daemon::lines::Lines;
use bismuth_model::Backend;
use bismuth_zk::store::functions;
use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyExt, Empty};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::function_id;
use crate::error::ApiError;
use crate::state::AppState;

/// `GET /function/{id}/logs`.
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = function_id(&id)?;
    let follow = matches!(query.get("follow").map(String::as_str), Some("true" | "1"));
    let tail = match query.get("tail") {
        None => None,
        Some(t) => Some(t.parse::<u64>().map_err(|_| {
            ApiError::BadRequest(format!(
                "tail must be a number of lines (a non-negative integer), not {t:?}"
            ))
        })?),
    };
    let backends = functions::get_backends(state.zk()?, id).await?.value;
    let prefix = backends.len() > 1;
    if follow {
        return Ok(follow_all(&state, &backends, prefix, tail).into_response());
    }
    // Streamed a line at a time (lines bounded): a huge log or a 64 MB line
    // never sits in the api's memory.
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        for b in &backends {
            let tag = if prefix {
                format!("[{}] ", b.container_id)
            } else {
                String::new()
            };
            let mut body = match fetch(&state, *b, false, tail).await {
                Ok(body) => body,
                Err(e) => {
                    let line = format!("[{}] (logs unavailable: {e})\n", b.container_id);
                    if tx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let mut lines = Lines::default();
            loop {
                let mut out = String::new();
                let more = match body.frame().await {
                    Some(Ok(f)) => {
                        if let Some(data) = f.data_ref() {
                            lines.push(data, |l| push_line(&mut out, &tag, l));
                        }
                        true
                    }
                    Some(Err(e)) => {
                        out.push_str(&format!("{tag}(log stream broke: {e})\n"));
                        false
                    }
                    None => {
                        lines.finish(|l| push_line(&mut out, &tag, l));
                        false
                    }
                };
                if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                    return;
                }
                if !more {
                    break;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(chunk), rx))
    });
    Ok((
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

fn push_line(out: &mut String, tag: &str, line: &str) {
    out.push_str(tag);
    out.push_str(line);
    out.push('\n');
}

async fn fetch(
    state: &AppState,
    b: Backend,
    follow: bool,
    tail: Option<u64>,
) -> Result<hyper::body::Incoming, String> {
    let url = format!(
        "http://{}:{}/logs/{}?follow={follow}{}",
        b.ip,
        state.config().bismuthd_port,
        b.container_id,
        tail.map_or(String::new(), |n| format!("&tail={n}"))
    );
    let req = http::Request::get(&url)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = state
        .http()
        .request(req)
        .await
        .map_err(|e| format!("bismuthd on {}: {e}", b.ip))?;
    if !resp.status().is_success() {
        return Err(format!("bismuthd on {} answered {}", b.ip, resp.status()));
    }
    Ok(resp.into_body())
}

/// Merges every backend's followed log into one SSE stream.
fn follow_all(
    state: &AppState,
    backends: &[Backend],
    prefix: bool,
    tail: Option<u64>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel::<String>(256);
    let mut tasks = JoinSet::new();
    for b in backends {
        let (state, b, tx) = (state.clone(), *b, tx.clone());
        let tag = if prefix {
            format!("[{}] ", b.container_id)
        } else {
            String::new()
        };
        tasks.spawn(async move {
            let mut body = match fetch(&state, b, true, tail).await {
                Ok(body) => body,
                Err(e) => {
                    let _ = tx
                        .send(format!("[{}] (logs unavailable: {e})", b.container_id))
                        .await;
                    return;
                }
            };
            // bismuthd's events carry lines of at most MAX_LINE after "data: ".
            let mut lines = Lines::new(bismuth_daemon::lines::MAX_LINE + 64);
            while let Some(Ok(frame)) = body.frame().await {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                let mut texts = Vec::new();
                lines.push(data, |line| {
                    // bismuthd sends SSE; plain lines are passed through too.
                    let text = match line.strip_prefix("data:") {
                        Some(rest) => rest.strip_prefix(' ').unwrap_or(rest),
                        None if line.is_empty()
                            || line.starts_with(':')
                            || line.starts_with("event:")
                            || line.starts_with("id:") =>
                        {
                            return
                        }
                        None => line,
                    };
                    texts.push(format!("{tag}{text}"));
                });
                for text in texts {
                    if tx.send(text).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    // The JoinSet lives in the stream: when the client leaves, the stream is
    // dropped and every upstream task is aborted.
    let stream = futures_util::stream::unfold((rx, tasks), |(mut rx, tasks)| async move {
        let line = rx.recv().await?;
        Some((Ok(Event::default().data(line)), (rx, tasks)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
