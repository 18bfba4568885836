//! The ADS service on the wire: gRPC framing of the two stream methods,
//! done here instead of by tonic's generated server so that each response
//! is encoded into a buffer of exactly its size and freed once written.
//! (tonic's encoder keeps one buffer per stream, grown to the largest
//! response the stream ever sent, for the stream's life: with 1,000 proxies
//! that was most of the node's memory.) Requests are read by `requests.rs`.

use super::{
    delta::DeltaStream, protocol::AdsProtocol, requests::Requests, sotw::SotwStream, XdsService,
};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::StreamBody;
use hyper::body::Frame;
use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc, task::Poll};
use tokio::sync::mpsc;
use tonic::{body::Body, server::NamedService, Status};

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
    let requests = Requests::new(body, MAX_REQUEST_BYTES);
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
    use crate::{authz::Caller, metrics::Metrics, xds::mesh::MeshSnapshot};
    use envoy_types::pb::envoy::{
        config::core::v3::Node,
        service::discovery::v3::{
            DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryResponse,
        },
    };
    use http_body_util::BodyExt;
    use meridian_routes::type_url;
    use prost::Message;
    use tower::Service;

    type Mesh = tokio::sync::watch::Sender<Arc<MeshSnapshot>>;

    /// A server of an empty mesh, and the sender that keeps the mesh open.
    fn server() -> (AdsServer, Mesh) {
        let (sender, mesh) = tokio::sync::watch::channel(Arc::new(MeshSnapshot::default()));
        let server = AdsServer::new(XdsService::new(
            1,
            mesh,
            Arc::default(),
            Arc::new(Metrics::default()),
            None,
        ));
        (server, sender)
    }

    fn call(path: &str, body: Body, caller: Option<Caller>) -> (http::Response<Body>, Mesh) {
        let mut request = http::Request::builder()
            .uri(path)
            .body(body)
            .expect("request");
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller);
        }
        let (mut server, mesh) = server();
        let response = futures::executor::block_on(server.call(request)).expect("infallible");
        (response, mesh)
    }

    /// The body's data frames, then its trailers.
    async fn frames_of(response: http::Response<Body>) -> (Vec<Bytes>, http::HeaderMap) {
        let mut body = response.into_body();
        let mut data = Vec::new();
        loop {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
                .await
                .expect("the body goes on")
                .expect("a frame before the end")
                .expect("no body error");
            match frame.into_data() {
                Ok(bytes) => data.push(bytes),
                Err(frame) => return (data, frame.into_trailers().expect("trailers")),
            }
        }
    }

    fn one_request(request: &DeltaDiscoveryRequest) -> Body {
        Body::new(http_body_util::Full::new(framed(request)))
    }

    fn first_request() -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: Some(Node {
                id: "p1".into(),
                cluster: "c1".into(),
                ..Default::default()
            }),
            type_url: type_url::CLUSTER.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_stream_answers_in_grpc_frames_then_ends_with_its_status() {
        let (response, _mesh) = call(DELTA, one_request(&first_request()), Some(Caller::Anyone));
        assert_eq!(response.headers()["content-type"], "application/grpc");
        let (data, trailers) = frames_of(response).await;
        assert_eq!(data.len(), 1, "the first answer: {data:?}");
        let length = u32::from_be_bytes(data[0][1..5].try_into().expect("prefix")) as usize;
        assert_eq!(data[0].len(), 5 + length);
        let answer = DeltaDiscoveryResponse::decode(&data[0][5..]).expect("a response");
        assert_eq!(answer.type_url, type_url::CLUSTER);
        // The client closed its side after one request: the stream ends well.
        assert_eq!(trailers["grpc-status"], "0");
    }

    #[tokio::test]
    async fn an_answer_waits_for_a_turn_as_a_push_does() {
        let (mut server, _mesh) = server();
        let turns = server.xds.turns.clone();
        let all = u32::try_from(turns.available_permits()).expect("a few");
        let held = turns.acquire_many_owned(all).await.expect("every turn");
        let mut request = http::Request::builder()
            .uri(DELTA)
            .body(one_request(&first_request()))
            .expect("request");
        request.extensions_mut().insert(Caller::Anyone);
        let mut body = server.call(request).await.expect("infallible").into_body();
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(200), body.frame());
        assert!(waiting.await.is_err(), "answered without a turn");
        drop(held);
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("answered once a turn is free")
            .expect("a frame")
            .expect("no body error");
        let data = frame.into_data().expect("the answer, not the end");
        let answer = DeltaDiscoveryResponse::decode(&data[5..]).expect("a response");
        assert_eq!(answer.type_url, type_url::CLUSTER);
    }

    #[tokio::test]
    async fn a_refused_stream_ends_with_the_refusal_as_trailers() {
        // No caller recorded by the authorization layer: fail closed.
        let (response, _mesh) = call(DELTA, one_request(&first_request()), None);
        let (data, trailers) = frames_of(response).await;
        assert!(data.is_empty());
        assert_eq!(trailers["grpc-status"], "16", "UNAUTHENTICATED");
        // A first request without a node.
        let nameless = DeltaDiscoveryRequest {
            node: None,
            ..first_request()
        };
        let (response, _mesh) = call(DELTA, one_request(&nameless), Some(Caller::Anyone));
        let (_, trailers) = frames_of(response).await;
        assert_eq!(trailers["grpc-status"], "3", "INVALID_ARGUMENT");
        // Bytes that are no request.
        let garbage = Body::new(http_body_util::Full::new(Bytes::from_static(
            b"\0\0\0\0\x03\xff\xff\xff",
        )));
        let (response, _mesh) = call(DELTA, garbage, Some(Caller::Anyone));
        let (_, trailers) = frames_of(response).await;
        assert_ne!(trailers["grpc-status"], "0");
    }

    #[tokio::test]
    async fn a_compressed_request_or_an_unknown_method_is_refused_at_once() {
        let mut request = http::Request::builder()
            .uri(STATE_OF_THE_WORLD)
            .header("grpc-encoding", "gzip")
            .body(Body::empty())
            .expect("request");
        request.extensions_mut().insert(Caller::Anyone);
        let response = server().0.call(request).await.expect("infallible");
        assert_eq!(response.headers()["grpc-status"], "12", "UNIMPLEMENTED");
        let (response, _) = call(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/Nothing",
            Body::empty(),
            Some(Caller::Anyone),
        );
        assert_eq!(response.headers()["grpc-status"], "12");
    }

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
