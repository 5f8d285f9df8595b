//! A proxy's byte-level fast path: a request head parsed in place (where
//! its parts lie in the connection's buffer, which headers are passed on,
//! and whether the fast path serves it at all; else hyper does), and a
//! response head written on as it is parsed ([`relay_response_head`]).
//!
//! The fast path takes HTTP/1.1 requests in origin form (`/path?query`)
//! with no body or a `Content-Length` one of at most [`MAX_BODY`] bytes, no
//! `Transfer-Encoding` and no `Expect`; every other request (HTTP/1.0,
//! chunked uploads, `100-continue`, heads over [`MAX_HEAD`] or with more
//! than [`MAX_HEADERS`] headers, malformed ones) is [`Unsupported`] and the
//! connection is handed to hyper, which answers it as before.

use std::net::SocketAddr;
use std::ops::Range;

use bytes::BytesMut;
use http::{Method, StatusCode};

use crate::upstream::wire::{self, BodyFraming};
use crate::upstream::Error;

pub mod conn;
pub use conn::{Conn, Next};

/// Longest request head the fast path reads.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers a fast-path request may have.
pub const MAX_HEADERS: usize = 64;
/// Largest request body the fast path buffers (whole, so that it can go to
/// another backend when the first refuses the connection).
pub const MAX_BODY: u64 = 64 * 1024;

/// Headers a proxy does not pass on as they came: hop-by-hop ones (RFC
/// 9110 §7.6.1), those it answers itself (`expect`), and those it sets
/// (`host`, framing, trace context, `x-forwarded-*`).
const NOT_PASSED: [&str; 16] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "expect",
    "content-length",
    "traceparent",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Why a request is left to hyper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not for the fast path: {0}")]
pub struct Unsupported(pub &'static str);

/// A parsed request head; kept per connection and parsed into again for
/// each request, so that its lists keep their capacity.
#[derive(Debug, Default)]
pub struct RequestHead {
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
    pub method: Option<Method>,
    /// The request target (`/path?query`).
    pub target: Range<usize>,
    /// Where the target's path ends (its `?`, or the target's end).
    pub path_end: usize,
    pub host: Option<Range<usize>>,
    pub traceparent: Option<Range<usize>>,
    /// Every `X-Forwarded-For` value, in order.
    pub forwarded_for: Vec<Range<usize>>,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` (the last of each).
    pub forwarded_proto: Option<Range<usize>>,
    pub forwarded_host: Option<Range<usize>>,
    /// The body's length (0 without `Content-Length`).
    pub content_length: u64,
    /// Whether the client asked to close the connection after this request.
    pub close: bool,
    /// The headers to pass on (name, value), in order.
    pub passed: Vec<(Range<usize>, Range<usize>)>,
    /// Names the `Connection` header lists (hop-by-hop as well).
    listed: Vec<Range<usize>>,
}

impl RequestHead {
    /// Parses the head at the start of `buf`: `Ok(true)` when complete,
    /// `Ok(false)` when more bytes are needed.
    pub fn parse(&mut self, buf: &[u8]) -> Result<bool, Unsupported> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut slots);
        let len = match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(Unsupported("a long head"))
            }
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(_) => return Err(Unsupported("a malformed or unusual head")),
        };
        if req.version != Some(1) {
            return Err(Unsupported("not HTTP/1.1"));
        }
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        let target = req.path.unwrap_or_default();
        if !target.starts_with('/') {
            return Err(Unsupported("a target not in origin form"));
        }
        let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
            .map_err(|_| Unsupported("a bad method"))?;
        self.len = len;
        self.method = Some(method);
        self.target = at(target.as_bytes());
        self.path_end = self.target.start + target.find('?').unwrap_or(target.len());
        self.host = None;
        self.traceparent = None;
        self.forwarded_for.clear();
        self.forwarded_proto = None;
        self.forwarded_host = None;
        self.content_length = 0;
        self.close = false;
        self.passed.clear();
        self.listed.clear();
        let mut length = None;
        for h in req.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                        self.listed.push(at(token));
                    }
                }
            } else if name.eq_ignore_ascii_case("host") {
                if self.host.is_some() {
                    return Err(Unsupported("two hosts"));
                }
                std::str::from_utf8(h.value).map_err(|_| Unsupported("a host not in UTF-8"))?;
                self.host = Some(at(h.value));
            } else if name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or(Unsupported("a bad content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Unsupported("conflicting content-lengths"));
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(Unsupported("a transfer-encoding"));
            } else if name.eq_ignore_ascii_case("expect") {
                return Err(Unsupported("an expectation"));
            } else if name.eq_ignore_ascii_case("traceparent") {
                self.traceparent = Some(at(h.value));
            } else if name.eq_ignore_ascii_case("x-forwarded-for") {
                self.forwarded_for.push(at(h.value));
            } else if name.eq_ignore_ascii_case("x-forwarded-proto") {
                self.forwarded_proto = Some(at(h.value));
            } else if name.eq_ignore_ascii_case("x-forwarded-host") {
                self.forwarded_host = Some(at(h.value));
            } else if !NOT_PASSED.iter().any(|n| name.eq_ignore_ascii_case(n)) {
                self.passed.push((at(name.as_bytes()), at(h.value)));
            }
        }
        std::str::from_utf8(&buf[self.target.clone()])
            .map_err(|_| Unsupported("a target not in UTF-8"))?;
        self.content_length = length.unwrap_or(0);
        if self.content_length > MAX_BODY {
            return Err(Unsupported("a large body"));
        }
        if !self.listed.is_empty() {
            let listed = &self.listed;
            self.passed.retain(|(n, _)| {
                !listed
                    .iter()
                    .any(|l| buf[l.clone()].eq_ignore_ascii_case(&buf[n.clone()]))
            });
        }
        Ok(true)
    }

    /// The method (after a complete parse).
    pub fn method(&self) -> &Method {
        self.method.as_ref().unwrap_or(&Method::GET)
    }

    /// The head and its body: how many bytes of the buffer the request is.
    pub fn total_len(&self) -> usize {
        self.len + self.content_length as usize
    }

    /// Writes the headers to pass on, as they came in `buf`.
    pub fn write_passed(&self, buf: &[u8], out: &mut BytesMut) {
        for (name, value) in &self.passed {
            field(out, &buf[name.clone()], &buf[value.clone()]);
        }
    }

    /// Writes the body's `Content-Length` (when the method needs one), the
    /// blank line ending the head, and the body from `buf`.
    pub fn write_body(&self, buf: &[u8], out: &mut BytesMut) {
        let length = self.content_length;
        if wire::RequestFraming::for_body(self.method(), Some(length)) != wire::RequestFraming::None
        {
            out.extend_from_slice(b"content-length: ");
            crate::headers::push_decimal(out, length);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&buf[self.len..self.total_len()]);
    }
}

/// Starts an upstream request in `out` (cleared first): the request line
/// with `target` (its pieces in order) and the `Host` of `addr`.
pub fn request_start(out: &mut BytesMut, method: &Method, target: &[&[u8]], addr: SocketAddr) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    for piece in target {
        out.extend_from_slice(piece);
    }
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    crate::headers::push_ip(out, addr.ip());
    out.extend_from_slice(b":");
    crate::headers::push_decimal(out, u64::from(addr.port()));
    out.extend_from_slice(b"\r\n");
}

/// The text at `range` of `buf` (checked to be UTF-8 by the parse).
pub fn text(buf: &[u8], range: Range<usize>) -> &str {
    std::str::from_utf8(&buf[range]).unwrap_or("")
}

/// Response headers a proxy does not pass on: hop-by-hop ones, and the
/// framing it sets itself.
const NOT_RELAYED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// What [`relay_response_head`] found in a response head.
#[derive(Debug)]
pub struct RelayedHead {
    /// Bytes of the head, interim responses before it included.
    pub len: usize,
    pub status: StatusCode,
    pub framing: BodyFraming,
    /// Whether the connection may carry another request after this body.
    pub reusable: bool,
    /// Where the `x-bismuth-container-id` value lies, if the response has one.
    pub container: Option<Range<usize>>,
}

impl RelayedHead {
    /// Whether the body goes on chunked (it came chunked or until close).
    pub fn rechunk(&self) -> bool {
        matches!(self.framing, BodyFraming::Chunked | BodyFraming::UntilClose)
    }
}

/// Parses the response head (to a request with `method`) at the start of
/// `buf`, skipping interim 1xx responses, and writes its status line and
/// the headers to pass on into `out` (without the blank line: the caller
/// adds its own headers first). Hop-by-hop headers and those `Connection`
/// lists are left out, `Content-Length` too when the body is to be
/// re-chunked, and those named in `own` (lower case: the caller sets
/// them). `Ok(None)`: incomplete (nothing written).
pub fn relay_response_head(
    buf: &[u8],
    method: &Method,
    own: &[&str],
    out: &mut BytesMut,
) -> Result<Option<RelayedHead>, Error> {
    let mut start = 0;
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut response = httparse::Response::new(&mut slots);
        let (len, status) = match wire::parse_status(&mut response, &buf[start..], buf.len())? {
            wire::Status::Partial => return Ok(None),
            wire::Status::Interim(len) => {
                start += len;
                continue;
            }
            wire::Status::Final(len, status) => (len, status),
        };
        // First the framing and what `Connection` says, then the write.
        let mut close = false;
        let mut listed = false;
        let mut coding = None;
        let mut length = None;
        for h in response.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                        listed = true;
                    }
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                coding = Some(h.value);
            } else if h.name.eq_ignore_ascii_case("content-length") {
                length = Some(wire::content_length(length, h.value)?);
            }
        }
        let framing = wire::framing(status, method, coding, length);
        let rechunk = matches!(framing, BodyFraming::Chunked | BodyFraming::UntilClose);
        let is_listed = |name: &str| {
            listed
                && response
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                    .flat_map(|h| h.value.split(|&b| b == b','))
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
        };
        let base = buf.as_ptr() as usize;
        status_line(out, status);
        let mut container = None;
        for h in response.headers.iter() {
            let name = h.name;
            if NOT_RELAYED.iter().any(|n| name.eq_ignore_ascii_case(n))
                || own.iter().any(|n| name.eq_ignore_ascii_case(n))
                || (rechunk && name.eq_ignore_ascii_case("content-length"))
                || is_listed(name)
            {
                continue;
            }
            if name.eq_ignore_ascii_case("x-bismuth-container-id") {
                let at = h.value.as_ptr() as usize - base;
                container = Some(at..at + h.value.len());
            }
            field(out, name.as_bytes(), h.value);
        }
        let reusable = response.version == Some(1) && !close && framing != BodyFraming::UntilClose;
        return Ok(Some(RelayedHead {
            len: start + len,
            status,
            framing,
            reusable,
            container,
        }));
    }
}

/// Writes an HTTP/1.1 status line.
pub fn status_line(out: &mut BytesMut, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes a header line.
pub fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the `X-Bismuth-Container-Id` header line naming `id`.
pub fn container_field(out: &mut BytesMut, id: uuid::Uuid) {
    let mut text = uuid::Uuid::encode_buffer();
    let text = id.hyphenated().encode_lower(&mut text);
    field(
        out,
        crate::headers::CONTAINER_ID.as_str().as_bytes(),
        text.as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &[u8]) -> Result<Option<RequestHead>, Unsupported> {
        let mut head = RequestHead::default();
        Ok(head.parse(wire)?.then_some(head))
    }

    #[test]
    fn finds_the_parts_and_the_headers_to_pass_on() {
        let wire = b"POST /invoke/x/a?b=1 HTTP/1.1\r\nHost: app.example\r\nX-A: 1\r\n\
            Connection: keep-alive, X-Secret\r\nx-secret: s\r\nKeep-Alive: 5\r\n\
            X-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\ntraceparent: t\r\n\
            Upgrade: h2c\r\nContent-Length: 3\r\n\r\nabcNEXT";
        let h = parse(wire).unwrap().unwrap();
        assert_eq!(h.method(), Method::POST);
        assert_eq!(text(wire, h.target.clone()), "/invoke/x/a?b=1");
        assert_eq!(text(wire, h.target.start..h.path_end), "/invoke/x/a");
        assert_eq!(text(wire, h.host.clone().unwrap()), "app.example");
        assert_eq!(text(wire, h.traceparent.clone().unwrap()), "t");
        let xff: Vec<_> = h
            .forwarded_for
            .iter()
            .map(|r| text(wire, r.clone()))
            .collect();
        assert_eq!(xff, ["1.2.3.4", "5.6.7.8"]);
        let passed: Vec<_> = h
            .passed
            .iter()
            .map(|(n, v)| (text(wire, n.clone()), text(wire, v.clone())))
            .collect();
        assert_eq!(passed, [("X-A", "1")]);
        assert_eq!(h.content_length, 3);
        assert!(!h.close);
        assert_eq!(&wire[h.total_len()..], b"NEXT");
    }

    #[test]
    fn notes_close_and_waits_for_the_whole_head() {
        let h = parse(b"GET / HTTP/1.1\r\nconnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.close);
        assert_eq!(h.content_length, 0);
        assert!(parse(b"GET / HTTP/1.1\r\nhost: a").unwrap().is_none());
    }

    #[test]
    fn leaves_the_unusual_to_hyper() {
        for wire in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: x\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 999999\r\n\r\n",
            b"GET http://a/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(parse(wire).is_err(), "{:?}", String::from_utf8_lossy(wire));
        }
        let long = [b"GET / HTTP/1.1\r\nx: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert!(parse(&long).is_err());
        let many: Vec<u8> = std::iter::once(b"GET / HTTP/1.1\r\n".to_vec())
            .chain((0..MAX_HEADERS + 1).map(|i| format!("x{i}: 1\r\n").into_bytes()))
            .chain(std::iter::once(b"\r\n".to_vec()))
            .flatten()
            .collect();
        assert!(parse(&many).is_err());
    }

    fn relay(wire: &[u8], method: Method) -> (RelayedHead, String) {
        let mut out = BytesMut::new();
        let head = relay_response_head(wire, &method, &["traceparent"], &mut out)
            .unwrap()
            .unwrap();
        (head, String::from_utf8(out.to_vec()).unwrap())
    }

    #[test]
    fn relays_a_response_head_without_its_hop_by_hop_headers() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-A: 1\r\ntraceparent: t\r\n\
            Connection: keep-alive, x-secret\r\nx-secret: s\r\nKeep-Alive: 5\r\n\
            x-bismuth-container-id: c1\r\ncontent-length: 2\r\n\r\nok";
        let (head, out) = relay(wire, Method::GET);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nX-A: 1\r\nx-bismuth-container-id: c1\r\ncontent-length: 2\r\n"
        );
        assert_eq!(&wire[head.len..], b"ok");
        assert_eq!(head.framing, BodyFraming::Length(2));
        assert!(head.reusable && !head.rechunk());
        assert_eq!(&wire[head.container.unwrap()], b"c1");

        let (head, out) = relay(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\r\n",
            Method::GET,
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\n");
        assert!(head.rechunk() && head.reusable);

        let (head, _) = relay(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            Method::GET,
        );
        assert!(!head.reusable);
        let (head, _) = relay(b"HTTP/1.0 200 OK\r\n\r\n", Method::GET);
        assert_eq!(head.framing, BodyFraming::UntilClose);
        assert!(!head.reusable);
        let (head, out) = relay(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            Method::HEAD,
        );
        assert_eq!(head.framing, BodyFraming::Empty);
        assert!(
            out.contains("content-length: 5"),
            "a HEAD answer keeps its length"
        );

        let mut out = BytesMut::new();
        assert!(
            relay_response_head(b"HTTP/1.1 200 OK\r\nx: ", &Method::GET, &[], &mut out)
                .unwrap()
                .is_none()
        );
        assert!(out.is_empty());
        for bad in [
            &b"HTTP/1.1 101 Switching Protocols\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(relay_response_head(bad, &Method::GET, &[], &mut out).is_err());
        }
    }
}
