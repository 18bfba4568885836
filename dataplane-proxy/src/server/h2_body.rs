//! A request body as an HTTP/2 client sends it: its DATA frames, then its
//! trailers, each frame's bytes given back to the client's window as soon
//! as it is passed on.

use bytes::Bytes;
use h2::{Reason, RecvStream};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderMap, CONTENT_LENGTH};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

pub struct RequestBody {
    recv: RecvStream,
    data_done: bool,
    /// Bytes still to come by the request's `content-length` (h2 checks
    /// that the DATA frames add up to it).
    remaining: Option<u64>,
}

impl RequestBody {
    /// The body of a request whose head has `headers`.
    pub fn new(recv: RecvStream, headers: &HeaderMap) -> Self {
        let remaining = headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse().ok());
        RequestBody {
            recv,
            data_done: false,
            remaining,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let me = self.get_mut();
        if !me.data_done {
            match ready!(me.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = me.recv.flow_control().release_capacity(data.len());
                    if let Some(remaining) = &mut me.remaining {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(early_response(e)),
                None => me.data_done = true,
            }
        }
        match ready!(me.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) => Poll::Ready(early_response(e)),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(remaining) => SizeHint::with_exact(remaining),
            None => SizeHint::default(),
        }
    }
}

/// A reset with NO_ERROR ends the body without failing it: the client
/// has its response already and sends no more (RFC 9113, section 8.1).
fn early_response(error: h2::Error) -> Option<Result<Frame<Bytes>, h2::Error>> {
    (error.reason() != Some(Reason::NO_ERROR)).then_some(Err(error))
}
