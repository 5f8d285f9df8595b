//! A request body that is handed to the upstream connection only when it is
//! first polled. If connecting to a backend fails, the body was never
//! touched and can go to the next backend; once polled, it cannot be
//! replayed, and the request is not retried.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Shared slot holding the client's body until an attempt takes it.
#[derive(Clone, Debug)]
pub struct BodySlot {
    slot: Arc<Mutex<Option<Incoming>>>,
    hint: SizeHint,
    empty: bool,
}

impl BodySlot {
    /// Wraps the client's body.
    pub fn new(body: Incoming) -> Self {
        let hint = body.size_hint();
        let empty = body.is_end_stream();
        BodySlot {
            slot: Arc::new(Mutex::new(Some(body))),
            hint,
            empty,
        }
    }

    /// A body for one attempt.
    pub fn attempt(&self) -> Handoff {
        Handoff {
            slot: self.clone(),
            taken: None,
        }
    }

    /// The client's body's size, as announced.
    pub fn size_hint(&self) -> &SizeHint {
        &self.hint
    }

    /// Whether another attempt can still send the whole body.
    pub fn replayable(&self) -> bool {
        self.empty || self.slot.lock().map(|s| s.is_some()).unwrap_or(false)
    }
}

/// The body of one upstream attempt.
#[derive(Debug)]
pub struct Handoff {
    slot: BodySlot,
    taken: Option<Incoming>,
}

impl Body for Handoff {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.slot.empty {
            return Poll::Ready(None);
        }
        if self.taken.is_none() {
            let taken = self.slot.slot.lock().ok().and_then(|mut s| s.take());
            match taken {
                Some(body) => self.taken = Some(body),
                // Another attempt consumed it; nothing more to send.
                None => return Poll::Ready(None),
            }
        }
        match self.taken.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.slot.empty || self.taken.as_ref().is_some_and(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.slot.hint
    }
}
