//! HTTP/1.1 on the wire for the upstream client: the request head written
//! straight into a buffer, the response head parsed (`httparse`), and the
//! response body's framing (length, chunked, or until close) decoded.

use std::fmt::Write as _;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::Error;

/// Response heads longer than this are refused.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers a response may have.
const MAX_HEADERS: usize = 128;

/// How the request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body, and no `content-length` (a GET without one).
    None,
    /// `content-length: n`.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
}

impl RequestFraming {
    /// The framing for a body of `exact` size (`None`: unknown) sent with `method`.
    pub fn for_body(method: &Method, exact: Option<u64>) -> Self {
        match exact {
            Some(0)
                if matches!(
                    *method,
                    Method::GET
                        | Method::HEAD
                        | Method::OPTIONS
                        | Method::DELETE
                        | Method::TRACE
                        | Method::CONNECT
                ) =>
            {
                RequestFraming::None
            }
            Some(n) => RequestFraming::Length(n),
            None => RequestFraming::Chunked,
        }
    }
}

/// Writes a request head: `method target HTTP/1.1`, `host` (unless the
/// headers carry one), the headers but their own framing, then ours.
pub fn write_head(
    out: &mut BytesMut,
    method: &Method,
    target: std::fmt::Arguments<'_>,
    host: &[u8],
    headers: &HeaderMap,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    // Writing into a BytesMut cannot fail.
    let _ = out.write_fmt(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None => {}
        RequestFraming::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends one chunk of a chunked body.
pub fn write_chunk(out: &mut BytesMut, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: BodyFraming,
    /// Whether the connection may carry another request after this body.
    pub reusable: bool,
}

/// Parses a response head from the start of `buf`, taking it off `buf`.
/// `Ok(None)`: incomplete, read more. Interim 1xx responses are skipped
/// (their bytes taken off as well).
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Error> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut slots);
        let (len, status) = match parse_status(&mut response, buf, buf.len())? {
            Status::Partial => return Ok(None),
            Status::Interim(len) => {
                buf.advance(len);
                continue;
            }
            Status::Final(len, status) => (len, status),
        };
        let http11 = response.version == Some(1);
        // Where each name and value lies in the head, so that the values
        // can share the head's bytes instead of each being copied.
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        let mut spans: [_; MAX_HEADERS] = std::array::from_fn(|_| (0..0, 0..0));
        let count = response.headers.len();
        for (span, h) in spans.iter_mut().zip(response.headers.iter()) {
            *span = (at(h.name.as_bytes()), at(h.value));
        }
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        for (name, value) in spans.into_iter().take(count) {
            let name = HeaderName::from_bytes(&head[name.clone()])
                .map_err(|_| Error::BadResponse(format!("bad header name {:?}", &head[name])))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value))
                .map_err(|_| Error::BadResponse(format!("bad value of header {name}")))?;
            headers.append(name, value);
        }
        let framing = body_framing(status, method, &headers)?;
        let close = headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "close"));
        let reusable = http11 && !close && framing != BodyFraming::UntilClose;
        return Ok(Some(Head {
            status,
            headers,
            framing,
            reusable,
        }));
    }
}

/// Where [`parse_status`] got to in a response head.
#[derive(Debug)]
pub enum Status {
    /// Incomplete: read more.
    Partial,
    /// An interim 1xx response this long, to skip.
    Interim(usize),
    /// The final response's head, this long, with its status.
    Final(usize, StatusCode),
}

/// Parses a response head from `head` into `response` and checks its
/// status (`buffered`: how much is waiting in all, for the size bound).
/// Upgrades are refused: they are not proxied.
pub fn parse_status<'h, 'b>(
    response: &mut httparse::Response<'h, 'b>,
    head: &'b [u8],
    buffered: usize,
) -> Result<Status, Error> {
    let len = match response.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buffered > MAX_HEAD => {
            return Err(Error::BadResponse(format!(
                "response head over {MAX_HEAD} bytes"
            )))
        }
        Ok(httparse::Status::Partial) => return Ok(Status::Partial),
        Err(e) => return Err(Error::BadResponse(format!("malformed response head: {e}"))),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| Error::BadResponse(format!("bad status code {code}")))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Error::BadResponse(
            "protocol upgrades are not proxied".into(),
        ));
    }
    Ok(if status.is_informational() {
        Status::Interim(len)
    } else {
        Status::Final(len, status)
    })
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

fn body_framing(
    status: StatusCode,
    method: &Method,
    headers: &HeaderMap,
) -> Result<BodyFraming, Error> {
    let coding = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .map(HeaderValue::as_bytes);
    let mut length = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        length = Some(content_length(length, v.as_bytes())?);
    }
    Ok(framing(status, method, coding, length))
}

/// A `Content-Length` value, checked against one seen before (`prior`).
pub fn content_length(prior: Option<u64>, value: &[u8]) -> Result<u64, Error> {
    let n: u64 = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::BadResponse("bad content-length".into()))?;
    if prior.is_some_and(|l| l != n) {
        return Err(Error::BadResponse("conflicting content-lengths".into()));
    }
    Ok(n)
}

/// How the body of a response to `method` with `status` is delimited,
/// given its last `Transfer-Encoding` value and its `Content-Length`.
pub fn framing(
    status: StatusCode,
    method: &Method,
    transfer_encoding: Option<&[u8]>,
    length: Option<u64>,
) -> BodyFraming {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return BodyFraming::Empty;
    }
    if let Some(te) = transfer_encoding {
        let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
        return if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            BodyFraming::Chunked
        } else {
            BodyFraming::UntilClose
        };
    }
    match length {
        Some(0) => BodyFraming::Empty,
        Some(n) => BodyFraming::Length(n),
        None => BodyFraming::UntilClose,
    }
}

/// Decodes a response body from bytes as they arrive.
#[derive(Debug)]
pub enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    /// Chunked, in the given state.
    Chunked(Chunk),
    /// Everything until the peer closes.
    UntilClose,
    /// The body is complete.
    Done,
}

/// Where a chunked decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Reading a size line.
    Size,
    /// This many bytes of chunk data left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, until an empty one.
    Trailers,
}

/// Longest chunk-size line (size, extensions) accepted.
const MAX_LINE: usize = 4096;

impl Decoder {
    pub fn new(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => Decoder::Done,
            BodyFraming::Length(n) => Decoder::Length(n),
            BodyFraming::Chunked => Decoder::Chunked(Chunk::Size),
            BodyFraming::UntilClose => Decoder::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// Takes what it can from `buf`: `Ok(Some(data))` is body data (maybe
    /// empty when only framing was consumed), `Ok(None)` means more bytes
    /// are needed (or the body is done, see [`Decoder::is_done`]).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        loop {
            match self {
                Decoder::Done => return Ok(None),
                Decoder::UntilClose => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    return Ok(Some(buf.split().freeze()));
                }
                Decoder::Length(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        *self = Decoder::Done;
                    }
                    return Ok(Some(buf.split_to(n).freeze()));
                }
                Decoder::Chunked(state) => match *state {
                    Chunk::Size => {
                        let Some(end) = find_crlf(buf) else {
                            if buf.len() > MAX_LINE {
                                return Err(Error::BadResponse("chunk size line too long".into()));
                            }
                            return Ok(None);
                        };
                        let line = &buf[..end];
                        let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                        let size = std::str::from_utf8(digits)
                            .ok()
                            .map(str::trim)
                            .filter(|s| !s.is_empty() && s.len() <= 16)
                            .and_then(|s| u64::from_str_radix(s, 16).ok())
                            .ok_or_else(|| Error::BadResponse("bad chunk size".into()))?;
                        buf.advance(end + 2);
                        *state = if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return Ok(None);
                        }
                        let n = left.min(buf.len() as u64) as usize;
                        *state = if left == n as u64 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left - n as u64)
                        };
                        return Ok(Some(buf.split_to(n).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(None);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(Error::BadResponse("chunk not followed by CRLF".into()));
                        }
                        buf.advance(2);
                        *state = Chunk::Size;
                    }
                    Chunk::Trailers => {
                        let Some(end) = find_crlf(buf) else {
                            if buf.len() > MAX_HEAD {
                                return Err(Error::BadResponse("trailers too long".into()));
                            }
                            return Ok(None);
                        };
                        buf.advance(end + 2);
                        if end == 0 {
                            *self = Decoder::Done;
                        }
                    }
                },
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8], method: Method) -> Result<Option<Head>, Error> {
        parse_head(&mut BytesMut::from(bytes), &method)
    }

    /// Decodes `wire` fed one byte at a time; the body and whether it ended.
    fn decode_bytewise(framing: BodyFraming, wire: &[u8]) -> (Vec<u8>, bool) {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(data) = d.decode(&mut buf).unwrap() {
                out.extend_from_slice(&data);
            }
        }
        (out, d.is_done())
    }

    #[test]
    fn writes_a_head_with_our_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        let mut out = BytesMut::new();
        let id = 7;
        write_head(
            &mut out,
            &Method::POST,
            format_args!("/invoke/{id}/p?q=1"),
            b"10.0.0.2:8001",
            &headers,
            RequestFraming::Length(3),
        );
        assert_eq!(
            &out[..],
            b"POST /invoke/7/p?q=1 HTTP/1.1\r\nhost: 10.0.0.2:8001\r\nx-a: 1\r\ncontent-length: 3\r\n\r\n"
        );
        assert_eq!(
            RequestFraming::for_body(&Method::GET, Some(0)),
            RequestFraming::None
        );
        assert_eq!(
            RequestFraming::for_body(&Method::POST, Some(0)),
            RequestFraming::Length(0)
        );
        assert_eq!(
            RequestFraming::for_body(&Method::PUT, None),
            RequestFraming::Chunked
        );
    }

    #[test]
    fn parses_heads_and_their_framing() {
        let h = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx: y\r\n\r\nok",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, BodyFraming::Length(2));
        assert!(h.reusable);
        assert_eq!(h.headers["x"], "y");

        let h = head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, BodyFraming::Chunked);

        let h = head(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!h.reusable);

        let h = head(b"HTTP/1.0 200 OK\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, BodyFraming::UntilClose);
        assert!(!h.reusable);

        let h = head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, BodyFraming::Empty);
        let h = head(
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, BodyFraming::Empty);

        assert!(head(b"HTTP/1.1 200 OK\r\ncontent-le", Method::GET)
            .unwrap()
            .is_none());
        assert!(head(
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            Method::GET
        )
        .is_err());
        assert!(head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", Method::GET).is_err());
        assert!(head(b"garbage\r\n\r\n", Method::GET).is_err());
        assert!(head(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", Method::GET).is_err());
    }

    #[test]
    fn skips_interim_responses() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\nrest"
                [..],
        );
        let h = parse_head(&mut buf, &Method::POST).unwrap().unwrap();
        assert_eq!(h.status, 201);
        assert_eq!(h.framing, BodyFraming::Empty);
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn decodes_chunked_bodies_in_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\ntrailer: x\r\n\r\n";
        let (body, done) = decode_bytewise(BodyFraming::Chunked, wire);
        assert_eq!(body, b"hello world");
        assert!(done);
        // All at once, with bytes of the next response left in the buffer.
        let mut d = Decoder::new(BodyFraming::Chunked);
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nNEXT"[..]);
        let mut out = Vec::new();
        while let Some(data) = d.decode(&mut buf).unwrap() {
            out.extend_from_slice(&data);
        }
        assert_eq!(out, b"abc");
        assert!(d.is_done());
        assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn refuses_broken_chunks() {
        for wire in [&b"zz\r\n"[..], b"3\r\nabcX\r\n", b"\r\n"] {
            let mut d = Decoder::new(BodyFraming::Chunked);
            let mut buf = BytesMut::from(wire);
            let mut result = Ok(None);
            for _ in 0..4 {
                result = d.decode(&mut buf);
                if result.is_err() {
                    break;
                }
            }
            assert!(result.is_err(), "{wire:?}");
        }
    }

    #[test]
    fn decodes_lengths_and_until_close() {
        let (body, done) = decode_bytewise(BodyFraming::Length(4), b"abcd");
        assert_eq!(body, b"abcd");
        assert!(done);
        let mut d = Decoder::new(BodyFraming::Length(2));
        let mut buf = BytesMut::from(&b"abcd"[..]);
        assert_eq!(&d.decode(&mut buf).unwrap().unwrap()[..], b"ab");
        assert!(d.is_done());
        assert_eq!(&buf[..], b"cd");
        let (body, done) = decode_bytewise(BodyFraming::UntilClose, b"xyz");
        assert_eq!(body, b"xyz");
        assert!(!done);
    }
}
