//! A stream's requests off the wire: gRPC's length-prefixed messages cut
//! out of the request body's chunks and decoded, with no buffer kept
//! between messages. (tonic's decoder kept one per stream, grown to the
//! largest request the proxy ever sent, for the stream's life: about 6 KiB
//! of every connected proxy's share of a node, state-of-the-world answers
//! repeating every name they subscribe to.)

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use std::marker::PhantomData;
use tonic::{body::Body, Status};

/// The requests of one stream, as messages of type `M`.
pub struct Requests<M> {
    body: Body,
    messages: Deframer,
    _message: PhantomData<fn() -> M>,
}

impl<M: prost::Message + Default> Requests<M> {
    /// Requests from `body`, none larger than `limit` bytes.
    pub fn new(body: Body, limit: usize) -> Self {
        Requests {
            body,
            messages: Deframer::new(limit),
            _message: PhantomData,
        }
    }

    /// The next request; `None` once the client closed its side between
    /// requests. An error for a malformed, compressed or oversized one, or
    /// a side closed inside one. Cancel-safe (the stream's loop selects on
    /// it): what has arrived is kept here, not in the future.
    pub async fn message(&mut self) -> Result<Option<M>, Status> {
        loop {
            if let Some(bytes) = self.messages.next()? {
                return M::decode(bytes)
                    .map(Some)
                    .map_err(|e| Status::invalid_argument(format!("a malformed request: {e}")));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.messages.push(&data);
                    }
                }
                Some(Err(status)) => return Err(status),
                None if self.messages.is_empty() => return Ok(None),
                None => {
                    return Err(Status::invalid_argument(
                        "the request stream ended inside a message",
                    ))
                }
            }
        }
    }
}

/// gRPC messages cut out of a byte stream that arrives in chunks of any
/// size. Pure; the bytes of an unfinished message are all it holds, and
/// its buffer is let go whenever none are left.
struct Deframer {
    pending: BytesMut,
    limit: usize,
}

/// gRPC's prefix: a compression flag and the message's length.
const PREFIX: usize = 5;

impl Deframer {
    fn new(limit: usize) -> Self {
        Deframer {
            pending: BytesMut::new(),
            limit,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next whole message's bytes, if they have all arrived.
    fn next(&mut self) -> Result<Option<Bytes>, Status> {
        if self.pending.len() < PREFIX {
            return Ok(None);
        }
        match self.pending[0] {
            0 => {}
            1 => {
                return Err(Status::unimplemented(
                    "compressed requests are not supported",
                ))
            }
            flag => {
                return Err(Status::invalid_argument(format!(
                    "a request's compression flag is {flag}, not 0 or 1"
                )))
            }
        }
        let length = u32::from_be_bytes([
            self.pending[1],
            self.pending[2],
            self.pending[3],
            self.pending[4],
        ]) as usize;
        if length > self.limit {
            return Err(Status::out_of_range(format!(
                "a request of {length} bytes; the limit is {} bytes",
                self.limit
            )));
        }
        if self.pending.len() < PREFIX + length {
            return Ok(None);
        }
        self.pending.advance(PREFIX);
        let message = self.pending.split_to(length).freeze();
        if self.pending.is_empty() {
            // Nothing more has arrived: the buffer goes with the message.
            self.pending = BytesMut::new();
        }
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Every message of `stream` fed in chunks of `size` bytes.
    fn cut(stream: &[u8], size: usize) -> Result<Vec<Bytes>, Status> {
        let mut deframer = Deframer::new(1024);
        let mut messages = Vec::new();
        for chunk in stream.chunks(size) {
            deframer.push(chunk);
            while let Some(message) = deframer.next()? {
                messages.push(message);
            }
        }
        assert!(deframer.is_empty(), "nothing left over");
        Ok(messages)
    }

    #[test]
    fn messages_come_out_whole_whatever_the_chunks() {
        let payloads: [&[u8]; 4] = [b"first", b"", &[7; 300], b"last"];
        let stream: Vec<u8> = payloads.iter().flat_map(|p| framed(p)).collect();
        for size in [1, 2, 4, 5, 6, 64, stream.len()] {
            let messages = cut(&stream, size).expect("well formed");
            assert_eq!(messages, payloads, "chunks of {size}");
        }
    }

    #[test]
    fn no_buffer_is_kept_between_messages() {
        let mut deframer = Deframer::new(1024);
        deframer.push(&framed(&[1; 600])[..300]);
        assert!(deframer.next().expect("so far so good").is_none());
        assert!(deframer.pending.capacity() >= 300);
        deframer.push(&framed(&[1; 600])[300..]);
        let message = deframer.next().expect("whole").expect("a message");
        assert_eq!(message.len(), 600);
        assert!(
            message.is_unique(),
            "the buffer went with the message: the deframer keeps no share of it"
        );
    }

    #[test]
    fn an_oversized_compressed_or_flagged_request_is_refused() {
        let mut oversized = vec![0];
        oversized.extend_from_slice(&2000u32.to_be_bytes());
        let refused = cut(&oversized, 5).expect_err("too large");
        assert_eq!(refused.code(), Code::OutOfRange);
        let mut compressed = framed(b"gzip");
        compressed[0] = 1;
        assert_eq!(
            cut(&compressed, 64).expect_err("compressed").code(),
            Code::Unimplemented
        );
        let mut flagged = framed(b"what");
        flagged[0] = 9;
        assert_eq!(
            cut(&flagged, 64).expect_err("no such flag").code(),
            Code::InvalidArgument
        );
    }

    #[tokio::test]
    async fn a_side_closed_inside_a_message_or_bytes_that_are_no_message_end_the_stream() {
        use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest as Request;
        let body = |bytes: Vec<u8>| Body::new(http_body_util::Full::new(Bytes::from(bytes)));
        let whole = framed(&prost::Message::encode_to_vec(&Request {
            type_url: "t".into(),
            ..Default::default()
        }));
        let mut requests = Requests::<Request>::new(body(whole.clone()), 1024);
        let first = requests.message().await.expect("decodes").expect("one");
        assert_eq!(first.type_url, "t");
        assert!(requests.message().await.expect("a clean end").is_none());

        let truncated = whole[..whole.len() - 1].to_vec();
        let mut requests = Requests::<Request>::new(body(truncated), 1024);
        let refused = requests.message().await.expect_err("cut short");
        assert_eq!(refused.code(), Code::InvalidArgument);

        let garbage = framed(b"\x03\xff\xff\xff");
        let mut requests = Requests::<Request>::new(body(garbage), 1024);
        let refused = requests.message().await.expect_err("no message");
        assert_eq!(refused.code(), Code::InvalidArgument);
    }
}
