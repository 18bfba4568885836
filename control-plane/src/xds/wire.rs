//! The ADS service on the wire: gRPC framing of the two stream methods,
//! done here instead of by tonic's generated server so that each response
//! is encoded into a buffer of exactly its size and freed once written.
//! (tonic's encoder keeps one buffer per stream, grown to the largest
//! response the stream ever sent, for the stream's life: with 1,000 proxies
//! that was most of the node's memory.) Requests are decoded by tonic.

use super::{delta::DeltaStream, protocol::AdsProtocol, sotw::SotwStream, XdsService};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::StreamBody;
use hyper::body::Frame;
use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc, task::Poll};
use tokio::sync::mpsc;
use tonic::{
    body::Body,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
    server::NamedService,
    Status,
};

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const STATE_OF_THE_WORLD: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The largest request a proxy may send (tonic's default for a server).
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// The gRPC service of both ADS methods, for tonic's router.
#[derive(Clone)]
pub struct AdsServer {
    xds: Arc<XdsService>,
}

impl AdsServer {
    pub fn new(xds: XdsService) -> Self {
        AdsServer { xds: Arc::new(xds) }
    }
}

impl NamedService for AdsServer {
    const NAME: &'static str = SERVICE;
}

impl tower::Service<http::Request<Body>> for AdsServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let response = match request.uri().path() {
            STATE_OF_THE_WORLD => open::<SotwStream>(&self.xds, request),
            DELTA => open::<DeltaStream>(&self.xds, request),
            other => Status::unimplemented(format!("{SERVICE} has no method {other}")).into_http(),
        };
        Box::pin(std::future::ready(Ok(response)))
    }
}

/// Starts one stream's task; the response streams what it sends.
fn open<P: AdsProtocol>(xds: &XdsService, request: http::Request<Body>) -> http::Response<Body> {
    let compressed = request
        .headers()
        .get("grpc-encoding")
        .is_some_and(|e| e != "identity");
    if compressed {
        return Status::unimplemented("compressed requests are not supported").into_http();
    }
    let (parts, body) = request.into_parts();
    let decoder =
        SmallBuffer(tonic_prost::ProstCodec::<P::Response, P::Request>::default().decoder());
    let requests = tonic::Streaming::new_request(decoder, body, None, Some(MAX_REQUEST_BYTES));
    let context = xds.stream_context(&parts.extensions);
    let (tx, rx) = mpsc::channel(super::RESPONSE_BUFFER);
    super::spawn_stream(tx.clone(), super::run_stream::<P>(context, requests, tx));
    let mut response = http::Response::new(Body::new(StreamBody::new(frames(rx))));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// A decoder whose buffer starts at 1 KiB, not tonic's 8: a proxy's
/// requests are mostly a few hundred bytes, and each stream keeps its
/// buffer (grown to its largest request) for its life.
struct SmallBuffer<D>(D);

impl<D: Decoder> Decoder for SmallBuffer<D> {
    type Item = D::Item;
    type Error = D::Error;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D::Item>, D::Error> {
        self.0.decode(src)
    }

    fn buffer_settings(&self) -> BufferSettings {
        // The yield threshold is for encoding; tonic's default, 32 KiB.
        BufferSettings::new(1024, 32 * 1024)
    }
}

/// The response body: each message framed as gRPC, then the status as
/// trailers (OK once the stream's task ends without an error).
fn frames<M: prost::Message + Send + 'static>(
    rx: mpsc::Receiver<Box<Result<M, Status>>>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        Some(match rx.recv().await.map(|boxed| *boxed) {
            Some(Ok(message)) => (Ok(Frame::data(framed(&message))), Some(rx)),
            Some(Err(status)) => (Ok(Frame::trailers(trailers(&status))), None),
            None => (Ok(Frame::trailers(trailers(&Status::ok("")))), None),
        })
    })
}

/// A message with gRPC's prefix (uncompressed, length), in a buffer of its size.
fn framed(message: &impl prost::Message) -> Bytes {
    let length = message.encoded_len();
    let mut buffer = BytesMut::with_capacity(5 + length);
    buffer.put_u8(0);
    buffer.put_u32(u32::try_from(length).unwrap_or(u32::MAX));
    // Cannot fail: the buffer has room for the encoded length.
    let _ = message.encode(&mut buffer);
    buffer.freeze()
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        // A message that cannot be a header value: the code alone.
        let _ = Status::new(status.code(), "").add_header(&mut trailers);
    }
    trailers
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use prost::Message;

    #[test]
    fn a_framed_message_is_its_prefix_and_bytes_in_a_buffer_of_its_size() {
        let message = DiscoveryResponse {
            version_info: "7".into(),
            nonce: "n".into(),
            ..Default::default()
        };
        let framed = framed(&message);
        let length = message.encoded_len();
        assert_eq!(framed.len(), 5 + length);
        assert_eq!(framed[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes(framed[1..5].try_into().expect("four bytes")) as usize,
            length
        );
        assert_eq!(
            DiscoveryResponse::decode(&framed[5..]).expect("decodes"),
            message
        );
    }

    #[test]
    fn a_status_becomes_trailers() {
        let trailers = trailers(&Status::resource_exhausted("too many names"));
        assert_eq!(trailers["grpc-status"], "8");
        assert_eq!(trailers["grpc-message"], "too%20many%20names");
    }
}
