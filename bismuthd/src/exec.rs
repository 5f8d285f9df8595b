//! Executable mode: one process per request, started by the container's
//! bismuth-runner over its Unix socket (wire format in `runner/src/main.rs`).
//! The request body is the command's stdin; its stdout is the response.
//! Output up to 1 MiB is held until the exit status is known, so a non-zero
//! exit can still become a 500; larger output streams with a 200 and a
//! failure after that aborts the response mid-body.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedReadHalf;
use tokio_stream::wrappers::ReceiverStream;

use crate::node::{Handle, Target};
use crate::respond::{error, full, Body, BoxError};

/// Output held back to decide the status code.
const HOLD: usize = 1 << 20;

const KIND_STDOUT: u8 = 1;
const KIND_EXIT: u8 = 2;
const KIND_FAILED: u8 = 3;

/// Headers passed to the command as CGI-style environment variables.
const FORWARDED: &[(&str, &str)] = &[
    ("content-type", "CONTENT_TYPE"),
    ("content-length", "CONTENT_LENGTH"),
    ("traceparent", "HTTP_TRACEPARENT"),
    ("traceparent", "TRACEPARENT"),
    ("user-agent", "HTTP_USER_AGENT"),
    ("x-forwarded-for", "HTTP_X_FORWARDED_FOR"),
];

enum Outcome {
    Done { stdout: Vec<u8>, exit: i32 },
    NotStarted(String),
    Streaming { held: Vec<u8> },
}

/// Runs the function once for `req`.
pub async fn run<B>(
    h: &Handle,
    t: &Target,
    req: Request<B>,
    rest: &str,
    timeout: Duration,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError> + Send,
{
    let stream = match crate::files::connect_runner(&t.runner_socket).await {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("the function's runner is not reachable: {e}"),
            )
        }
    };
    let (mut rd, mut wr) = stream.into_split();

    let mut header = format!(
        "BISMUTH_TIMEOUT_MS={}\nREQUEST_METHOD={}\nPATH_INFO={}\nQUERY_STRING={}\n",
        timeout.as_millis(),
        req.method(),
        clean(rest),
        clean(req.uri().query().unwrap_or_default()),
    );
    for (name, var) in FORWARDED {
        if let Some(v) = req.headers().get(*name).and_then(|v| v.to_str().ok()) {
            header.push_str(&format!("{var}={}\n", clean(v)));
        }
    }
    let mut msg = (header.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(header.as_bytes());
    if let Err(e) = wr.write_all(&msg).await {
        return error(
            StatusCode::BAD_GATEWAY,
            format!("the function's runner hung up: {e}"),
        );
    }

    // The body goes in on its own task while output comes back.
    let mut body = req.into_body();
    let feeder = tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if wr.write_all(&data).await.is_err() {
                    break;
                }
            }
        }
        let _ = wr.shutdown().await;
    });

    // The runner enforces the limit; ours is the backstop.
    let outcome = tokio::time::timeout(
        timeout + Duration::from_secs(1),
        read_until_decided(&mut rd),
    )
    .await;
    match outcome {
        Err(_) => {
            feeder.abort();
            h.files.log_line(&format!(
                "a request ran over {} ms and was stopped",
                timeout.as_millis()
            ));
            error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the function did not finish within {} ms",
                    timeout.as_millis()
                ),
            )
        }
        Ok(Err(e)) => {
            feeder.abort();
            error(
                StatusCode::BAD_GATEWAY,
                format!("the function's runner failed: {e}"),
            )
        }
        Ok(Ok(Outcome::NotStarted(msg))) => {
            feeder.abort();
            error(StatusCode::INTERNAL_SERVER_ERROR, msg)
        }
        Ok(Ok(Outcome::Done { stdout, exit: 0 })) => Response::new(full(stdout)),
        Ok(Ok(Outcome::Done { exit, .. })) => {
            h.files
                .log_line(&format!("a request's process {}", describe(exit)));
            crate::respond::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({
                    "error": format!("the function {}; its stderr is in the container's log", describe(exit)),
                    "exit_code": exit,
                }),
            )
        }
        Ok(Ok(Outcome::Streaming { held })) => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(8);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Frame::data(Bytes::from(held)))).await;
                loop {
                    match read_frame(&mut rd).await {
                        Ok((KIND_STDOUT, data)) => {
                            if tx.send(Ok(Frame::data(Bytes::from(data)))).await.is_err() {
                                break;
                            }
                        }
                        Ok((KIND_EXIT, data)) if exit_code(&data) == 0 => break,
                        Ok((_, data)) => {
                            let why =
                                format!("the function failed mid-response ({})", exit_code(&data));
                            let _ = tx.send(Err(why.into())).await;
                            break;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            break;
                        }
                    }
                }
                drop(feeder);
            });
            Response::new(BodyExt::boxed(StreamBody::new(ReceiverStream::new(rx))))
        }
    }
}

/// Reads frames until the exit status arrives or the held output is full.
async fn read_until_decided(rd: &mut OwnedReadHalf) -> std::io::Result<Outcome> {
    let mut stdout = Vec::new();
    loop {
        let (kind, data) = read_frame(rd).await?;
        match kind {
            KIND_STDOUT => {
                stdout.extend_from_slice(&data);
                if stdout.len() > HOLD {
                    return Ok(Outcome::Streaming { held: stdout });
                }
            }
            KIND_EXIT => {
                return Ok(Outcome::Done {
                    stdout,
                    exit: exit_code(&data),
                })
            }
            KIND_FAILED => {
                return Ok(Outcome::NotStarted(
                    String::from_utf8_lossy(&data).into_owned(),
                ))
            }
            other => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unknown frame kind {other}"),
                ))
            }
        }
    }
}

async fn read_frame(rd: &mut OwnedReadHalf) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    rd.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > 16 << 20 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut data = vec![0u8; len];
    rd.read_exact(&mut data).await?;
    Ok((head[0], data))
}

fn exit_code(data: &[u8]) -> i32 {
    data.try_into().map(i32::from_be_bytes).unwrap_or(-1)
}

fn describe(exit: i32) -> String {
    if exit < 0 {
        format!("was killed by signal {}", -exit)
    } else {
        format!("exited with code {exit}")
    }
}

/// Header values as one line (the header is line-based).
fn clean(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}
