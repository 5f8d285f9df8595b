//! A response body read from the upstream connection as it is polled; the
//! connection goes back to the pool once the body ended cleanly.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::wire::{self, Decoder};
use super::{Client, Error, VERSION};

/// The body of an upstream response.
#[derive(Debug)]
pub struct UpstreamBody {
    state: State,
}

#[derive(Debug)]
enum State {
    /// All of it arrived with the head (or there is none).
    Whole(Option<Bytes>),
    /// More to read from the connection.
    Streaming(Box<Streaming>),
}

#[derive(Debug)]
struct Streaming {
    client: Client,
    addr: SocketAddr,
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    reusable: bool,
}

/// The response for a parsed head, its body's first bytes in `buf`.
pub(super) fn response(
    client: Client,
    addr: SocketAddr,
    stream: TcpStream,
    mut buf: BytesMut,
    head: wire::Head,
) -> Response<UpstreamBody> {
    let mut decoder = Decoder::new(head.framing);
    let state = match head.framing {
        wire::BodyFraming::Empty => {
            if head.reusable && buf.is_empty() {
                client.put_idle(addr, stream);
            }
            State::Whole(None)
        }
        // The common case of a small answer: all of it is here already.
        wire::BodyFraming::Length(n) if buf.len() as u64 >= n => {
            let data = decoder.decode(&mut buf).ok().flatten();
            if head.reusable && buf.is_empty() {
                client.put_idle(addr, stream);
            }
            State::Whole(data)
        }
        _ => State::Streaming(Box::new(Streaming {
            client,
            addr,
            stream,
            buf,
            decoder,
            reusable: head.reusable,
        })),
    };
    let mut response = Response::new(UpstreamBody { state });
    *response.status_mut() = head.status;
    *response.version_mut() = VERSION;
    *response.headers_mut() = head.headers;
    response
}

impl Streaming {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Err(e) => return Poll::Ready(Some(Err(e))),
                Ok(Some(data)) if !data.is_empty() => return Poll::Ready(Some(Ok(data))),
                Ok(Some(_)) => continue,
                Ok(None) if self.decoder.is_done() => return Poll::Ready(None),
                Ok(None) => {}
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(Error::Io(e)))),
                Poll::Ready(Ok(0)) => {
                    if matches!(self.decoder, Decoder::UntilClose) {
                        self.reusable = false;
                        self.decoder = Decoder::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(Error::BadResponse(
                        "the connection closed within the response body".into(),
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let result = match &mut this.state {
            State::Whole(data) => return Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            State::Streaming(s) => match s.poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            },
        };
        match result {
            Some(r) => Poll::Ready(Some(r.map(Frame::data))),
            None => {
                // Done: the connection serves the next request if it can.
                if let State::Streaming(s) = std::mem::replace(&mut this.state, State::Whole(None))
                {
                    if s.reusable && s.buf.is_empty() {
                        s.client.put_idle(s.addr, s.stream);
                    }
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Whole(None) => SizeHint::with_exact(0),
            State::Whole(Some(d)) => SizeHint::with_exact(d.len() as u64),
            State::Streaming(s) => match s.decoder {
                Decoder::Length(n) => SizeHint::with_exact(n),
                Decoder::Done => SizeHint::with_exact(0),
                _ => SizeHint::default(),
            },
        }
    }
}
