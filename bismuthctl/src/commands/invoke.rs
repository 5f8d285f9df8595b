//! `bismuthctl invoke ID|--host H [-d DATA]`: one request through the
//! frontend, by function id (`/invoke/{id}`) or by a routed hostname; the
//! answer's body goes to stdout as it arrives. `-d @FILE` sends a file,
//! `-d -` standard input, `-d TEXT` the text; with data the method is POST
//! (as curl does).

use std::io::{Read, Write};
use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;
use uuid::Uuid;

use crate::client::Server;
use crate::UsageError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The function's id (or give --host)
    #[arg(required_unless_present = "host", conflicts_with = "host")]
    pub function: Option<Uuid>,
    /// A hostname routed to the function
    #[arg(long, value_name = "HOSTNAME")]
    pub host: Option<String>,
    /// The request body: TEXT, @FILE, or - for stdin
    #[arg(short = 'd', long = "data", value_name = "DATA")]
    pub data: Option<String>,
    /// The method (default GET, or POST with --data)
    #[arg(short = 'X', long = "method", value_name = "METHOD")]
    pub method: Option<String>,
    /// The path (and query) the function sees
    #[arg(long, default_value = "/")]
    pub path: String,
    /// A request header 'Name: value' (repeatable)
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Print the status line and the response headers to stderr
    #[arg(short = 'i', long)]
    pub include: bool,
}

impl Args {
    /// The method, headers and body, checked before anything is sent.
    fn request(&self) -> Result<(Method, HeaderMap, Bytes), UsageError> {
        if !self.path.starts_with('/') {
            return Err(UsageError(format!(
                "--path must start with /, got {:?}",
                self.path
            )));
        }
        let body = match self.data.as_deref() {
            None => Bytes::new(),
            Some("-") => {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .map_err(|e| UsageError(format!("cannot read stdin: {e}")))?;
                Bytes::from(buf)
            }
            Some(d) => match d.strip_prefix('@') {
                Some(file) => Bytes::from(
                    std::fs::read(Path::new(file))
                        .map_err(|e| UsageError(format!("-d @{file}: cannot read {file}: {e}")))?,
                ),
                None => Bytes::from(d.to_owned()),
            },
        };
        let method = match &self.method {
            Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| UsageError(format!("-X {m:?} is not an HTTP method")))?,
            None if self.data.is_some() => Method::POST,
            None => Method::GET,
        };
        let mut headers = HeaderMap::new();
        for h in &self.headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| UsageError(format!("-H {h:?}: a header is 'Name: value'")))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| UsageError(format!("-H {h:?}: {name:?} is not a header name")))?;
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| UsageError(format!("-H {h:?}: the value holds invalid characters")))?;
            headers.append(name, value);
        }
        if let Some(host) = &self.host {
            let value = HeaderValue::from_str(host)
                .map_err(|_| UsageError(format!("--host {host:?} is not a hostname")))?;
            headers.insert(http::header::HOST, value);
        }
        Ok((method, headers, body))
    }

    /// Checks the input without sending anything.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.data.as_deref() == Some("-") {
            return Ok(()); // read when sent
        }
        self.request().map(|_| ())?;
        Ok(())
    }
}

pub async fn run(fe: &Server, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let (method, headers, body) = args.request()?;
    let path = match args.function {
        Some(id) if args.path == "/" => format!("/invoke/{id}"),
        Some(id) => format!("/invoke/{id}{}", args.path),
        None => args.path.clone(),
    };
    let resp = fe.send(method, &path, headers, body).await?;
    let status = resp.status();
    if args.include {
        eprintln!("{:?} {status}", resp.version());
        for (name, value) in resp.headers() {
            eprintln!("{name}: {}", String::from_utf8_lossy(value.as_bytes()));
        }
        eprintln!();
    }
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| anyhow::anyhow!("the answer broke off: {e}"))?;
        if let Some(data) = frame.data_ref() {
            out.write_all(data)?;
            out.flush()?;
        }
    }
    if !status.is_success() {
        anyhow::bail!("the frontend answered HTTP {}", status.as_u16());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(data: Option<&str>, method: Option<&str>, headers: &[&str]) -> Args {
        Args {
            function: Some(Uuid::nil()),
            host: None,
            data: data.map(Into::into),
            method: method.map(Into::into),
            path: "/".into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            include: false,
        }
    }

    #[test]
    fn method_follows_the_data() {
        assert_eq!(args(None, None, &[]).request().unwrap().0, Method::GET);
        let (m, _, body) = args(Some("hi"), None, &[]).request().unwrap();
        assert_eq!((m, body), (Method::POST, Bytes::from("hi")));
        assert_eq!(
            args(Some("x"), Some("put"), &[]).request().unwrap().0,
            Method::PUT
        );
    }

    #[test]
    fn bad_input_is_named() {
        let e = args(Some("@/nonexistent/file"), None, &[])
            .request()
            .unwrap_err();
        assert!(e.0.contains("cannot read /nonexistent/file"), "{e}");
        let e = args(None, None, &["no colon"]).request().unwrap_err();
        assert!(e.0.contains("'Name: value'"), "{e}");
        let e = args(None, Some("GE T"), &[]).request().unwrap_err();
        assert!(e.0.contains("not an HTTP method"), "{e}");
        let (_, h, _) = args(None, None, &["X-A: 1"]).request().unwrap();
        assert_eq!(h["x-a"], "1");
    }
}
