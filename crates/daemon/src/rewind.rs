//! A connection with bytes already read from it put back in front, so that
//! a server taking the connection over (hyper, after a fast path looked at
//! the request) reads them first.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `prefix`, then whatever `inner` reads; writes go to `inner`.
#[derive(Debug)]
pub struct Rewound<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewound<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Rewound { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewound<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewound<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_the_prefix_first_and_writes_through() {
        let (mut near, far) = tokio::io::duplex(64);
        let mut r = Rewound::new(Bytes::from_static(b"GET "), far);
        near.write_all(b"/ HTTP/1.1").await.unwrap();
        let mut got = vec![0; 14];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1");
        r.write_all(b"ok").await.unwrap();
        let mut back = [0; 2];
        near.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ok");
    }
}
