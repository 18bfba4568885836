//! meridian-proxy against slow and greedy clients: ten thousand connections
//! that never send a byte and clients that send a header byte a second do
//! not stop it serving everyone else, cost it bounded memory and are closed
//! on time; past `--max-connections` a new connection is closed at once;
//! an HTTP/2 client gets no more streams than `--max-concurrent-streams`,
//! and a head larger than `--max-request-headers-kb` is refused with 431.

use meridian_tests::{
    eventually,
    http::metric,
    proxy::{self, OneEndpoint, WAIT},
    rss_kib,
};
use std::time::{Duration, Instant};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// `count` sequential requests through the proxy all answered 200 "up".
async fn serves(mesh: &OneEndpoint, count: usize) {
    let client = proxy::client();
    for i in 0..count {
        let answer = proxy::get(&client, &mesh.addr, "web.shop", "/").await;
        assert_eq!(
            answer.as_ref().map(|(s, b)| (*s, b.as_str())),
            Some((200, "up")),
            "request {i} while the proxy is crowded"
        );
    }
}

/// Open file descriptors of process `pid`: its sockets, mostly.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The gauge of client connections the proxy holds now.
const OPEN: &str = "meridian_proxy_open_connections ";

/// `count` connections to `addr` that send nothing, opened a few hundred at
/// a time (the listener's backlog is finite).
async fn idle_connections(addr: &str, count: usize) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(count);
    while open.len() < count {
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..(count - open.len()).min(100) {
            batch.spawn(TcpStream::connect(addr.to_string()));
        }
        while let Some(connected) = batch.join_next().await {
            open.push(connected.expect("connect task").expect("connect"));
        }
    }
    open
}

/// Whether the proxy closed `stream` (a read ends) before `deadline`.
async fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut sink = Vec::new();
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, stream.read_to_end(&mut sink))
        .await
        .is_ok()
}

/// A client that sends a request head one byte a second, never finishing
/// it; returns how long the proxy let it go on.
async fn trickle(addr: String) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let head = b"GET / HTTP/1.1\r\nHost: web.shop\r\nX-Slow: ";
    let mut bytes = head.iter().chain(std::iter::repeat(&b'a'));
    let mut buf = [0u8; 64];
    loop {
        let byte = *bytes.next().expect("endless");
        if stream.write_all(&[byte]).await.is_err() {
            return started.elapsed();
        }
        // A read that ends (EOF or reset) within the second: closed.
        let read = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return started.elapsed();
        }
        if started.elapsed() > WAIT {
            return started.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_and_slow_heads_leave_everyone_else_served() {
    const IDLE: usize = 10_000;
    const TIMEOUT: u64 = 15;
    let timeout = TIMEOUT.to_string();
    let mesh = OneEndpoint::start("proxy-crowd", &["--header-read-timeout", &timeout]).await;
    let pid = mesh.proxy.pid().expect("the proxy runs");
    serves(&mesh, 20).await;
    let (files_before, rss_before) = (open_files(pid), rss_kib(pid));

    let slow: Vec<_> = (0..20)
        .map(|_| tokio::spawn(trickle(mesh.addr.clone())))
        .collect();
    let opening = Instant::now();
    let mut idle = idle_connections(&mesh.addr, IDLE).await;
    // Connected is not yet accepted: wait until the proxy holds them all.
    let files_held = eventually(WAIT, "the proxy to accept every connection", || {
        let files = open_files(pid);
        async move { (files >= files_before + IDLE).then_some(files) }
    })
    .await;
    let opened_in = opening.elapsed();
    // All held at once: the first have not reached the timeout yet.
    assert!(
        opened_in < Duration::from_secs(TIMEOUT - 2),
        "accepting {IDLE} connections took {opened_in:?} ({files_held} files open): too slow to hold them together"
    );
    serves(&mesh, 50).await;
    let rss_held = rss_kib(pid);
    let per_connection = rss_held.saturating_sub(rss_before) as f64 * 1024.0 / IDLE as f64;
    println!(
        "{IDLE} idle connections opened in {opened_in:?}; proxy RSS {rss_before} KiB -> {rss_held} KiB ({per_connection:.0} bytes per connection)"
    );
    // A connection that has not spoken holds a small task, nothing more
    // (before the serving state was boxed: 5.3 KB each in a debug build).
    assert!(
        per_connection < 4.0 * 1024.0,
        "{per_connection:.0} bytes of proxy memory per idle connection"
    );

    // Every idle one is closed once the header timeout passes (with room
    // for a loaded machine), and so is every slow one.
    let deadline = opening + Duration::from_secs(TIMEOUT) + WAIT;
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(
            closed_by(stream, deadline).await,
            "idle connection {i} still open"
        );
    }
    for task in slow {
        let lasted = task.await.expect("slow client");
        assert!(
            lasted < Duration::from_secs(TIMEOUT) + Duration::from_secs(10),
            "a client sending a byte a second was let go on for {lasted:?}"
        );
    }
    drop(idle);
    eventually(
        WAIT,
        "the proxy to let go of the closed connections",
        || {
            let files = open_files(pid);
            async move { (files <= files_before + 10).then_some(()) }
        },
    )
    .await;
    serves(&mesh, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_new_connection_is_closed_at_once() {
    let mesh = OneEndpoint::start("proxy-cap", &["--max-connections", "50"]).await;
    // The connections that found the proxy routing are gone first.
    eventually(WAIT, "the proxy to hold no connection", || async {
        (metric(&mesh.proxy.admin, OPEN).await == 0.0).then_some(())
    })
    .await;
    let mut held = idle_connections(&mesh.addr, 50).await;
    // Connected is not yet admitted: each worker accepts from a queue of
    // its own, so a later connection can be admitted before an earlier one.
    eventually(WAIT, "the proxy to hold the 50", || async {
        (metric(&mesh.proxy.admin, OPEN).await == 50.0).then_some(())
    })
    .await;
    // Accepted and closed: the read ends at once, no answer.
    let mut extra = TcpStream::connect(&mesh.addr).await.expect("connect");
    let _ = extra
        .write_all(b"GET / HTTP/1.1\r\nHost: web.shop\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, extra.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the 51st connection was kept waiting");
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "the 51st connection was served"
    );
    let (_, metrics) = meridian_tests::http::get(&mesh.proxy.admin, "/metrics")
        .await
        .expect("metrics");
    assert!(
        metrics.contains("meridian_proxy_connections_refused_total 1")
            || metrics.lines().any(
                |l| l.starts_with("meridian_proxy_connections_refused_total ")
                    && !l.ends_with(" 0")
            ),
        "{metrics}"
    );
    // Room again once some leave.
    held.truncate(40);
    eventually(WAIT, "a connection admitted again", || async {
        let client = proxy::client();
        let (status, _) = proxy::get(&client, &mesh.addr, "web.shop", "/").await?;
        (status == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_is_refused_with_431() {
    let mesh = OneEndpoint::start("proxy-headers", &["--max-request-headers-kb", "16"]).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: web.shop\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: web.shop\r\n{many}\r\n");
    for (what, request) in [("20 KiB of headers", big), ("150 headers", many)] {
        let mut stream = TcpStream::connect(&mesh.addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "{what}: left open");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 431"), "{what}: {text}");
    }
    // A head under the limit goes through.
    let fine = format!(
        "GET / HTTP/1.1\r\nHost: web.shop\r\nX-Fine: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(8 * 1024)
    );
    let mut stream = TcpStream::connect(&mesh.addr).await.expect("connect");
    stream.write_all(fine.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_gets_no_more_streams_than_the_limit() {
    let mesh = OneEndpoint::start("proxy-streams", &["--max-concurrent-streams", "4"]).await;
    // Every request waits at the upstream, so the streams stay open.
    mesh.upstream.slow(Duration::from_millis(1_500));
    let stream = TcpStream::connect(&mesh.addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("an HTTP/2 connection");
    tokio::spawn(connection);
    // One request first: its answer comes after the proxy's SETTINGS, so
    // the client knows the limit before the burst.
    let mut first = sender.clone();
    let request = hyper::Request::get("http://web.shop/")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = first
        .send_request(request)
        .await
        .expect("the first request");
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..12 {
        let mut sender = sender.clone();
        requests.spawn(async move {
            let request = hyper::Request::get("http://web.shop/")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("request");
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("{e:?}"))?;
            Ok::<_, String>((response.status().as_u16(), started.elapsed()))
        });
    }
    // All answered, in at least three waves of at most four: the client
    // waits for a free stream rather than the proxy holding twelve.
    let mut times = Vec::new();
    while let Some(answer) = requests.join_next().await {
        let (status, at) = answer.expect("request task").expect("an answer");
        assert_eq!(status, 200);
        times.push(at);
    }
    times.sort();
    assert!(
        times[11] >= Duration::from_millis(3 * 1_500 - 300),
        "12 requests on 4 streams answered by {:?}: more than 4 at once",
        times[11]
    );
}
