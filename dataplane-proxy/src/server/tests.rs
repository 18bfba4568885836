//! The server of one connection, driven over an in-memory pipe by hyper's
//! clients: streaming both ways under flow control, trailers, a client's
//! reset, a failing response body, keep-alive, and the drain.

use super::*;
use crate::forward::whole_body;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::{http1, http2};
use hyper::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::Notify;

/// Answers by path: `/echo` streams the request's frames back (trailers
/// too), `/held` answers once `release` is notified (and counts the
/// requests dropped before), `/fail` sends a chunk and then fails,
/// `/endless` sends 16 KiB chunks for ever (counting those taken).
#[derive(Clone, Default)]
struct Test {
    release: Arc<Notify>,
    dropped: Arc<AtomicUsize>,
    pulled: Arc<AtomicUsize>,
    /// Requests that reached `/held`.
    held: Arc<AtomicUsize>,
}

struct CountsDrop(Arc<AtomicUsize>);

impl Drop for CountsDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Handler for Test {
    fn call<B>(
        &self,
        request: Request<B>,
    ) -> impl Future<Output = Response<ProxyBody>> + Send + use<B>
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BodyError> + Into<BoxError>,
    {
        let Test {
            release,
            dropped,
            pulled,
            held,
        } = self.clone();
        async move {
            match request.uri().path() {
                "/echo" => Response::new(request.into_body().map_err(Into::into).boxed()),
                "/held" => {
                    held.fetch_add(1, Ordering::SeqCst);
                    let guard = CountsDrop(dropped);
                    release.notified().await;
                    std::mem::forget(guard);
                    Response::new(whole_body(Bytes::from_static(b"released")))
                }
                "/fail" => {
                    let frames: Vec<Result<Frame<Bytes>, BodyError>> = vec![
                        Ok(Frame::data(Bytes::from_static(b"part"))),
                        Err(BodyError("the upstream went away".into())),
                    ];
                    Response::new(StreamBody::new(futures::stream::iter(frames)).boxed())
                }
                "/endless" => {
                    let chunks = futures::stream::unfold(pulled, |pulled| async move {
                        tokio::task::yield_now().await;
                        pulled.fetch_add(1, Ordering::SeqCst);
                        let chunk = Frame::data(Bytes::from(vec![0u8; 16 * 1024]));
                        Some((Ok::<_, BodyError>(chunk), pulled))
                    });
                    Response::new(StreamBody::new(chunks).boxed())
                }
                _ => Response::new(whole_body(Bytes::from_static(b"hello"))),
            }
        }
    }
}

fn limits() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(5),
        max_connections: 10,
        max_concurrent_streams: 100,
        max_header_bytes: 16 * 1024,
    }
}

/// A server on one end of a pipe; the other end, and the server's task.
fn start(
    handler: Test,
    drain: &Drain,
) -> (DuplexStream, tokio::task::JoinHandle<Result<(), BoxError>>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let draining = drain.watch();
    let task = tokio::spawn(async move { serve(server, handler, &limits(), draining).await });
    (client, task)
}

async fn h2_client(io: DuplexStream) -> http2::SendRequest<ProxyBody> {
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .expect("an HTTP/2 connection");
    tokio::spawn(connection);
    sender
}

fn get(path: &str) -> Request<ProxyBody> {
    Request::builder()
        .uri(format!("http://test{path}"))
        .body(whole_body(Bytes::new()))
        .expect("a request")
}

async fn body_of(response: Response<hyper::body::Incoming>) -> Bytes {
    let collected = response.into_body().collect().await;
    collected.expect("the body").to_bytes()
}

/// Asks for a drain and waits until it is asked (not until it is done).
async fn drain_now(drain: Drain) -> tokio::task::JoinHandle<()> {
    let observer = drain.watch();
    let shutdown = tokio::spawn(async move { drain.shutdown().await });
    eventually("the drain is asked for", || observer.is_requested()).await;
    drop(observer);
    // The connections it woke run before this test goes on.
    tokio::task::yield_now().await;
    shutdown
}

/// With a drain asked for and a request held in flight: the connection is
/// still open; released, the request is answered, and then the connection
/// closes cleanly and the drain ends.
async fn released_then_closed(
    handler: &Test,
    in_flight: tokio::task::JoinHandle<hyper::Result<Response<hyper::body::Incoming>>>,
    shutdown: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<Result<(), BoxError>>,
) {
    assert!(!server.is_finished(), "a request is in flight");
    handler.release.notify_one();
    let response = in_flight
        .await
        .expect("the client")
        .expect("the request in flight is answered");
    assert_eq!(body_of(response).await, "released");
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("the drain ends once the connection closed")
        .expect("the drain");
    assert!(server.await.expect("the server task").is_ok());
}

/// `request` sent from a task of its own, once the handler holds it.
async fn held<F>(handler: &Test, request: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let sent = tokio::spawn(request);
    eventually("the request reaches the handler", || {
        handler.held.load(Ordering::SeqCst) == 1
    })
    .await;
    sent
}

/// Polls `condition` until it holds, for at most five seconds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_http2_body_larger_than_the_window_streams_both_ways_with_its_trailers() {
    let drain = Drain::new();
    let (io, _server) = start(Test::default(), &drain);
    let mut client = h2_client(io).await;
    // 3 MiB: three times the window the server grants, so it flows only as
    // the handler passes the bytes on and they are given back.
    let (sender, body) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BodyError>>(4);
    let request = Request::builder()
        .uri("http://test/echo")
        .body(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(body)).boxed())
        .expect("a request");
    let sending = tokio::spawn(async move {
        for _ in 0..48 {
            let chunk = Bytes::from(vec![7u8; 64 * 1024]);
            sender
                .send(Ok(Frame::data(chunk)))
                .await
                .expect("the body is read");
        }
        let mut trailers = hyper::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().expect("a header value"));
        sender
            .send(Ok(Frame::trailers(trailers)))
            .await
            .expect("the body is read");
    });
    let exchange = async {
        let response = client.send_request(request).await.expect("a response");
        assert_eq!(response.status(), StatusCode::OK);
        response
            .into_body()
            .collect()
            .await
            .expect("the whole body")
    };
    let collected = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the body stalled");
    let trailers = collected.trailers().cloned();
    let bytes = collected.to_bytes();
    assert_eq!(bytes.len(), 48 * 64 * 1024);
    assert!(bytes.iter().all(|b| *b == 7));
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
    sending.await.expect("the sender");
}

#[tokio::test]
async fn a_client_that_does_not_read_holds_back_the_response_body() {
    let drain = Drain::new();
    let handler = Test::default();
    let (io, _server) = start(handler.clone(), &drain);
    let (mut client, connection) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .handshake::<_, ProxyBody>(TokioIo::new(io))
        .await
        .expect("an HTTP/2 connection");
    tokio::spawn(connection);
    let response = client.send_request(get("/endless")).await.expect("a head");
    // Not read: the client's 64 KiB window fills, and the body must wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pulled = handler.pulled.load(Ordering::SeqCst);
    assert!(
        pulled <= 8,
        "{pulled} chunks of 16 KiB taken for a 64 KiB window"
    );
    drop(response);
}

#[tokio::test]
async fn a_reset_stream_drops_its_request_and_the_connection_serves_on() {
    let drain = Drain::new();
    let handler = Test::default();
    let (io, _server) = start(handler.clone(), &drain);
    let mut client = h2_client(io).await;
    // Dropping the response future makes hyper's client reset the stream.
    let held = held(&handler, {
        let mut client = client.clone();
        async move { client.send_request(get("/held")).await }
    })
    .await;
    held.abort();
    eventually("the reset request's future is dropped", || {
        handler.dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    let response = client.send_request(get("/")).await.expect("served on");
    assert_eq!(body_of(response).await, "hello");
}

#[tokio::test]
async fn a_response_body_that_fails_resets_its_stream() {
    let drain = Drain::new();
    let (io, _server) = start(Test::default(), &drain);
    let mut client = h2_client(io).await;
    // The reset may overtake the head as the client reads them.
    if let Ok(response) = client.send_request(get("/fail")).await {
        let read = response.into_body().collect().await;
        assert!(
            read.is_err(),
            "a cut body must not read as a whole one: {read:?}"
        );
    }
    let response = client.send_request(get("/")).await.expect("served on");
    assert!(response.headers().contains_key(hyper::header::DATE));
    assert_eq!(response.headers()[hyper::header::CONTENT_LENGTH], "5");
}

#[tokio::test]
async fn a_drain_lets_an_http2_request_in_flight_finish_then_closes() {
    let drain = Drain::new();
    let handler = Test::default();
    let (io, server) = start(handler.clone(), &drain);
    let mut client = h2_client(io).await;
    let in_flight = held(&handler, {
        let mut client = client.clone();
        async move { client.send_request(get("/held")).await }
    })
    .await;
    assert_eq!(drain.open(), 1);
    let shutdown = drain_now(drain).await;
    // Once the client has the GOAWAY, it opens no new stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.send_request(get("/")).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new streams still served"
        );
    }
    released_then_closed(&handler, in_flight, shutdown, server).await;
}

#[tokio::test]
async fn a_drain_lets_an_http1_request_in_flight_finish_then_closes() {
    let drain = Drain::new();
    let handler = Test::default();
    let (io, server) = start(handler.clone(), &drain);
    let (mut client, connection) = http1::handshake::<_, ProxyBody>(TokioIo::new(io))
        .await
        .expect("an HTTP/1.1 connection");
    tokio::spawn(connection);
    let in_flight = held(&handler, client.send_request(get("/held"))).await;
    let shutdown = drain_now(drain).await;
    released_then_closed(&handler, in_flight, shutdown, server).await;
}

#[tokio::test]
async fn an_http2_client_that_stops_answering_pings_is_closed() {
    let (mut io, server) = tokio::io::duplex(64 * 1024);
    let times = h2::KeepAliveTimes {
        every: Duration::from_millis(100),
        within: Duration::from_millis(100),
    };
    let draining = Drain::new().watch();
    let server = tokio::spawn(async move {
        h2::serve(server, Test::default(), &limits(), draining, times).await
    });
    // A client that sends the preface and its settings, then reads what
    // comes but answers nothing: a peer that vanished.
    io.write_all(crate::coalesce::PREFACE)
        .await
        .expect("the preface is written");
    io.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .expect("the settings are written");
    let reading = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        while io.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let closed = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(closed.is_ok(), "still open without a pong");
    reading.await.expect("the reader");
}

#[tokio::test]
async fn an_http2_client_that_answers_pings_stays_open() {
    let (io, server) = tokio::io::duplex(64 * 1024);
    let times = h2::KeepAliveTimes {
        every: Duration::from_millis(50),
        within: Duration::from_millis(200),
    };
    let draining = Drain::new().watch();
    let server = tokio::spawn(async move {
        h2::serve(server, Test::default(), &limits(), draining, times).await
    });
    let mut client = h2_client(io).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !server.is_finished(),
        "closed though every ping was answered"
    );
    let response = client.send_request(get("/")).await.expect("still served");
    assert_eq!(response.status(), StatusCode::OK);
}
