//! The client against a scripted upstream on a real socket: what it
//! writes, how it reads each framing, and when a connection is used again.

use super::conn::Connection;
use super::{Client, Connector, IdleConnections};
use crate::forward::{BodyError, ProxyBody, TryError, TryRequest};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream does with a request: its answer, and whether it then
/// closes the connection (without saying so); `None`: close unanswered.
type Script = dyn Fn(usize, &str) -> Option<(String, bool)> + Send + Sync;

/// A scripted upstream: every request it read, by connection.
struct Upstream {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Upstream {
    /// Answers each request as `script` says, given the connection's
    /// number and the request.
    async fn start(
        script: impl Fn(usize, &str) -> Option<(String, bool)> + Send + Sync + 'static,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let kept = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let connection = {
                    let mut seen = kept.lock().expect("seen");
                    seen.push(Vec::new());
                    seen.len() - 1
                };
                tokio::spawn(serve(stream, connection, kept.clone(), script.clone()));
            }
        });
        Upstream { addr, seen }
    }

    fn connections(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }

    fn requests(&self, connection: usize) -> Vec<String> {
        self.seen.lock().expect("seen")[connection].clone()
    }
}

async fn serve(
    mut stream: TcpStream,
    connection: usize,
    seen: Arc<Mutex<Vec<Vec<String>>>>,
    script: Arc<Script>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        seen.lock().expect("seen")[connection].push(request.clone());
        let Some((answer, close)) = script(connection, &request) else {
            return;
        };
        if stream.write_all(answer.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// One whole request (head and body, by its length or chunked).
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        let text = String::from_utf8_lossy(buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|l| l.trim().parse::<usize>().ok());
            let total = match length {
                Some(length) => Some(end + 4 + length),
                None if head.contains("transfer-encoding: chunked") => {
                    text[end + 4..].find("0\r\n\r\n").map(|at| end + 4 + at + 5)
                }
                None => Some(end + 4),
            };
            if let Some(total) = total.filter(|t| *t <= buf.len()) {
                let request = String::from_utf8_lossy(&buf[..total]).to_string();
                buf.drain(..total);
                return Some(request);
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn ok(body: &str) -> Option<(String, bool)> {
    Some((
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ),
        false,
    ))
}

fn new_client() -> (Client, Arc<IdleConnections>) {
    let idle = Arc::new(IdleConnections::default());
    (
        Client::new(idle.clone(), Connector::Plain, Duration::from_secs(2)),
        idle,
    )
}

fn full(body: &'static str) -> ProxyBody {
    Full::new(Bytes::from(body))
        .map_err(|never| match never {})
        .boxed()
}

/// `request` as its one try, to the authority its URI names.
fn tried(request: Request<ProxyBody>) -> TryRequest {
    let authority = request.uri().authority().expect("an authority").clone();
    TryRequest::new(request, authority)
}

impl Client {
    fn send_request(
        &self,
        request: Request<ProxyBody>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, TryError>> {
        self.send(tried(request))
    }
}

fn request(upstream: &Upstream, method: &str, body: ProxyBody) -> Request<ProxyBody> {
    Request::builder()
        .method(method)
        .uri(format!("http://{}/x?y=1", upstream.addr))
        .header("host", "web.shop")
        .body(body)
        .expect("request")
}

async fn text(response: Response<ProxyBody>) -> String {
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8(body.to_vec()).expect("utf-8")
}

/// The body of a GET through `client`.
async fn get(client: &Client, upstream: &Upstream) -> String {
    let response = client
        .send_request(request(upstream, "GET", full("")))
        .await;
    text(response.expect("answered")).await
}

/// A GET whose `x-want` header tells the scripted upstream what to answer.
fn wanting(upstream: &Upstream, what: &str) -> Request<ProxyBody> {
    let mut request = request(upstream, "GET", full(""));
    request
        .headers_mut()
        .insert("x-want", what.parse().expect("value"));
    request
}

#[tokio::test]
async fn without_a_host_header_the_host_is_the_authority_the_request_named() {
    let upstream = Upstream::start(|_, _| ok("")).await;
    let (client, _) = new_client();
    // An HTTP/2 client's request: its authority in the URI, no Host header.
    let address = upstream.addr.to_string();
    for (uri, host) in [
        ("http://web.shop/x?y=1", "web.shop"),
        ("/x?y=1", address.as_str()),
    ] {
        let request = Request::get(uri).body(full("")).expect("request");
        let authority = address.parse().expect("authority");
        let sent = client.send(TryRequest::new(request, authority)).await;
        text(sent.expect("sent")).await;
        let seen = upstream.requests(0);
        assert_eq!(
            seen.last().expect("a request"),
            &format!("GET /x?y=1 HTTP/1.1\r\nhost: {host}\r\n\r\n")
        );
    }
}

#[tokio::test]
async fn a_kept_alive_connection_carries_the_next_requests() {
    let upstream = Upstream::start(|_, _| ok("hello")).await;
    let (client, idle) = new_client();
    for _ in 0..3 {
        let response = client
            .send_request(request(&upstream, "GET", full("")))
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        assert_eq!(text(response).await, "hello");
    }
    assert_eq!(upstream.connections(), 1);
    assert_eq!(idle.len(), 1);
    assert_eq!(
        upstream.requests(0)[0],
        "GET /x?y=1 HTTP/1.1\r\nhost: web.shop\r\n\r\n"
    );
}

/// An upstream whose first connection answers one request marked
/// `x-first` ("one") and closes on the next without answering, as an
/// upstream whose idle timeout struck just as it arrived; later
/// connections answer everything ("two"). The client has had its answer.
async fn closing_after_one_answer(client: &Client) -> Upstream {
    let upstream = Upstream::start(|connection, request| match connection {
        0 if request.contains("\r\nx-first: 1\r\n") => ok("one"),
        0 => None,
        _ => ok("two"),
    })
    .await;
    let mut first = request(&upstream, "GET", full(""));
    first
        .headers_mut()
        .insert("x-first", "1".parse().expect("value"));
    assert_eq!(
        text(client.send_request(first).await.expect("first")).await,
        "one"
    );
    upstream
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_not_used_and_what_may_be_sent_twice_is_sent_again() {
    let (client, _) = new_client();
    let upstream = closing_after_one_answer(&client).await;
    let second = client
        .send_request(request(&upstream, "GET", full("")))
        .await
        .expect("sent again");
    assert_eq!(text(second).await, "two");
    assert_eq!(upstream.connections(), 2);

    // A request with a body is not sent twice unless forwarding says it
    // may be (it buffered the body for a retry): otherwise the try fails,
    // for forwarding's retry policy to decide.
    let (client, _) = new_client();
    let upstream = closing_after_one_answer(&client).await;
    let failed = client
        .send_request(request(&upstream, "POST", full("data")))
        .await;
    assert!(
        matches!(failed, Err(TryError::Failed(_))),
        "{:?}",
        failed.err()
    );
    assert_eq!(upstream.connections(), 1);
    // The same, with the body marked replayable: it goes again, whole.
    let (client, _) = new_client();
    let upstream = closing_after_one_answer(&client).await;
    let mut replayable = tried(request(&upstream, "PUT", full("data")));
    replayable.replay = Some(Bytes::from("data"));
    let resent = client.send(replayable).await.expect("sent again");
    assert_eq!(text(resent).await, "two");
    assert_eq!(
        upstream.requests(1)[0],
        "PUT /x?y=1 HTTP/1.1\r\nhost: web.shop\r\ncontent-length: 4\r\n\r\ndata"
    );
}

#[tokio::test]
async fn a_connection_the_upstream_closed_after_answering_is_not_taken_again() {
    let upstream = Upstream::start(|connection, _| {
        Some((
            format!("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n{connection}"),
            true,
        ))
    })
    .await;
    let (client, idle) = new_client();
    assert_eq!(get(&client, &upstream).await, "0");
    // The close arrives while the connection is idle: the pool stops
    // offering it (a connection still offered is put back).
    let key = upstream.addr.to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Some(conn) = idle.take(&key, std::time::Instant::now(), Connection::still_idle) {
        assert!(
            std::time::Instant::now() < deadline,
            "a closed connection is still offered"
        );
        idle.put(&key, conn, std::time::Instant::now());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(&client, &upstream).await, "1");
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn response_bodies_are_read_as_framed() {
    let upstream = Upstream::start(|_, request| {
        let answer = if request.starts_with("GET /x?y=1 HTTP/1.1\r\nhost: web.shop\r\nx-want: chunked") {
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n"
        } else if request.contains("x-want: close") {
            "HTTP/1.1 200 OK\r\n\r\nuntil the end"
        } else if request.starts_with("HEAD") {
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
        } else {
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
        };
        Some((answer.to_string(), request.contains("x-want: close")))
    })
    .await;
    let (client, idle) = new_client();
    let chunked = client
        .send_request(wanting(&upstream, "chunked"))
        .await
        .expect("chunked");
    assert!(chunked.headers().get("transfer-encoding").is_none());
    assert_eq!(text(chunked).await, "hello world");
    let interim = client
        .send_request(wanting(&upstream, "length"))
        .await
        .expect("after a 100");
    assert_eq!(interim.status(), 200);
    assert_eq!(text(interim).await, "hello");
    let head = client
        .send_request(request(&upstream, "HEAD", full("")))
        .await
        .expect("head");
    assert_eq!(head.headers()["content-length"], "5");
    assert_eq!(text(head).await, "");
    assert_eq!(upstream.connections(), 1, "all on one kept connection");
    assert_eq!(
        text(
            client
                .send_request(wanting(&upstream, "close"))
                .await
                .expect("close")
        )
        .await,
        "until the end"
    );
    assert_eq!(
        idle.len(),
        0,
        "a body read to the close leaves no connection"
    );
}

#[tokio::test]
async fn a_body_dropped_before_its_end_closes_its_connection() {
    let upstream = Upstream::start(|_, _| ok("0123456789")).await;
    let (client, idle) = new_client();
    let response = client
        .send_request(request(&upstream, "GET", full("")))
        .await
        .expect("sent");
    drop(response);
    assert_eq!(idle.len(), 0);
    assert_eq!(get(&client, &upstream).await, "0123456789");
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn request_bodies_are_framed_by_their_length_or_chunked() {
    let upstream = Upstream::start(|_, _| ok("")).await;
    let (client, _) = new_client();
    let sent = client
        .send_request(request(&upstream, "POST", full("hello")))
        .await
        .expect("sent");
    text(sent).await;
    let frames = vec![
        Ok::<_, BodyError>(Frame::data(Bytes::from("hel"))),
        Ok(Frame::data(Bytes::from("lo world"))),
    ];
    let streamed = StreamBody::new(tokio_stream::iter(frames)).boxed();
    let mut chunked = request(&upstream, "PUT", streamed);
    // The client's own framing headers are not passed on.
    chunked
        .headers_mut()
        .insert("transfer-encoding", "chunked".parse().expect("value"));
    text(client.send_request(chunked).await.expect("sent")).await;
    let empty_post = client
        .send_request(request(&upstream, "POST", full("")))
        .await
        .expect("sent");
    text(empty_post).await;
    // A large piece is written from where it is, framed the same.
    let large = vec![Ok::<_, BodyError>(Frame::data(Bytes::from(vec![
        b'x';
        100 << 10
    ])))];
    let large = StreamBody::new(tokio_stream::iter(large)).boxed();
    text(
        client
            .send_request(request(&upstream, "PUT", large))
            .await
            .expect("sent"),
    )
    .await;
    let seen = upstream.requests(0);
    assert_eq!(
        seen[3],
        format!(
            "PUT /x?y=1 HTTP/1.1\r\nhost: web.shop\r\ntransfer-encoding: chunked\r\n\r\n19000\r\n{}\r\n0\r\n\r\n",
            "x".repeat(100 << 10)
        )
    );
    assert_eq!(
        seen[..3],
        [
            "POST /x?y=1 HTTP/1.1\r\nhost: web.shop\r\ncontent-length: 5\r\n\r\nhello",
            "PUT /x?y=1 HTTP/1.1\r\nhost: web.shop\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhel\r\n8\r\nlo world\r\n0\r\n\r\n",
            "POST /x?y=1 HTTP/1.1\r\nhost: web.shop\r\ncontent-length: 0\r\n\r\n",
        ]
    );
}

#[tokio::test]
async fn malformed_responses_and_refused_connections_fail_the_try() {
    let upstream = Upstream::start(|_, request| {
        let answer = if request.contains("x-want: smuggle") {
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd"
        } else if request.contains("x-want: chunk") {
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
        } else {
            "garbage\r\n\r\n"
        };
        Some((answer.to_string(), false))
    })
    .await;
    let (client, idle) = new_client();
    for what in ["smuggle", "garbage"] {
        let failed = client.send_request(wanting(&upstream, what)).await;
        assert!(
            matches!(failed, Err(TryError::Failed(_))),
            "{what}: {:?}",
            failed.err()
        );
    }
    let bad_chunk = client
        .send_request(wanting(&upstream, "chunk"))
        .await
        .expect("the head is fine");
    assert!(bad_chunk.into_body().collect().await.is_err());
    assert_eq!(idle.len(), 0, "no connection that failed is kept");

    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let refused = client
        .send_request(
            Request::builder()
                .uri(format!("http://{addr}/"))
                .body(full(""))
                .expect("request"),
        )
        .await;
    assert!(
        matches!(refused, Err(TryError::Connect(_))),
        "{:?}",
        refused.err()
    );
}

/// An upstream that reads a request's head, sends `answer`, and then
/// neither reads on nor closes.
async fn answering_after_the_head(answer: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read_exact(&mut byte).await.is_ok() {
            head.push(byte[0]);
        }
        let _ = stream.write_all(answer.as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    addr
}

#[tokio::test]
async fn an_answer_before_the_body_is_taken_is_passed_on_and_the_rest_not_sent() {
    // An upstream that refuses a large upload after its head: it answers
    // 413 and then neither reads on nor closes.
    let addr = answering_after_the_head(
        "HTTP/1.1 413 Content Too Large\r\ncontent-length: 8\r\n\r\ntoo big\n",
    )
    .await;
    let (client, idle) = new_client();
    let upload = Full::new(Bytes::from(vec![b'x'; 64 << 20]))
        .map_err(|never| match never {})
        .boxed();
    let request = Request::builder()
        .method("PUT")
        .uri(format!("http://{addr}/upload"))
        .body(upload)
        .expect("request");
    let answer = tokio::time::timeout(Duration::from_secs(20), client.send_request(request))
        .await
        .expect("the answer is not held behind the upload")
        .expect("answered");
    assert_eq!(answer.status(), 413);
    assert_eq!(text(answer).await, "too big\n");
    assert_eq!(idle.len(), 0, "the connection, out of step, is not kept");
}

#[tokio::test]
async fn an_answer_while_the_client_is_slow_to_send_its_body_is_passed_on() {
    // The upstream refuses after the head; the client has sent one piece
    // of its body and is still sending.
    let addr =
        answering_after_the_head("HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n").await;
    let (client, _) = new_client();
    let (pieces, rest) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BodyError>>(1);
    pieces
        .send(Ok(Frame::data(Bytes::from("first"))))
        .await
        .expect("queued");
    let slow = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rest)).boxed();
    let request = Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/upload"))
        .body(slow)
        .expect("request");
    let answer = tokio::time::timeout(Duration::from_secs(20), client.send_request(request))
        .await
        .expect("the answer is not held until the client sends more")
        .expect("answered");
    assert_eq!(answer.status(), 401);
    drop(pieces);
}
