//! `GET /function/{id}/logs[?follow=true]`: the containers' output, fetched
//! from the bismuthd of each backend (`/logs/{container_id}`). With several
//! backends every line is prefixed with `[container_id]`. With `follow`,
//! new lines stream as Server-Sent Events until the client leaves, which
//! drops the upstream connections with it.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
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
    let backends = functions::get_backends(state.zk()?, id).await?.value;
    let prefix = backends.len() > 1;
    if follow {
        return Ok(follow_all(&state, &backends, prefix).into_response());
    }
    let mut out = String::new();
    for b in &backends {
        let tag = if prefix {
            format!("[{}] ", b.container_id)
        } else {
            String::new()
        };
        match fetch(&state, *b, false).await {
            Ok(body) => {
                let mut body = body;
                let mut text = Vec::new();
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => text.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
                        Err(e) => {
                            out.push_str(&format!("{tag}(log stream broke: {e})\n"));
                            break;
                        }
                    }
                }
                for line in String::from_utf8_lossy(&text).lines() {
                    out.push_str(&tag);
                    out.push_str(line);
                    out.push('\n');
                }
            }
            Err(e) => out.push_str(&format!("[{}] (logs unavailable: {e})\n", b.container_id)),
        }
    }
    Ok((
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        out,
    )
        .into_response())
}

async fn fetch(
    state: &AppState,
    b: Backend,
    follow: bool,
) -> Result<hyper::body::Incoming, String> {
    let url = format!(
        "http://{}:{}/logs/{}{}",
        b.ip,
        state.config().bismuthd_port,
        b.container_id,
        if follow { "?follow=true" } else { "" }
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
            let mut body = match fetch(&state, b, true).await {
                Ok(body) => body,
                Err(e) => {
                    let _ = tx
                        .send(format!("[{}] (logs unavailable: {e})", b.container_id))
                        .await;
                    return;
                }
            };
            let mut pending = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                pending.extend_from_slice(data);
                while let Some(pos) = pending.iter().position(|c| *c == b'\n') {
                    let line: Vec<u8> = pending.drain(..=pos).collect();
                    let line = String::from_utf8_lossy(&line[..line.len() - 1])
                        .trim_end_matches('\r')
                        .to_owned();
                    // bismuthd sends SSE; plain lines are passed through too.
                    let text = match line.strip_prefix("data:") {
                        Some(rest) => rest.strip_prefix(' ').unwrap_or(rest).to_owned(),
                        None if line.is_empty()
                            || line.starts_with(':')
                            || line.starts_with("event:")
                            || line.starts_with("id:") =>
                        {
                            continue
                        }
                        None => line,
                    };
                    if tx.send(format!("{tag}{text}")).await.is_err() {
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
