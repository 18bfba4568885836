//! meridian-proxy end to end, with routes pushed by a real control plane to
//! real upstream HTTP servers: weights, failover to the next priority,
//! retries around a dead endpoint, and static stability with the control
//! plane gone, across a proxy restart too.

use meridian_tests::{
    agreed_leader, cli, eventually, free_port, http,
    proxy::{
        self, control_plane, endpoints, one_endpoint_mesh, routed_proxy, spread, wait_routed,
        OneEndpoint, ProxyProcess, WAIT,
    },
    start_cluster,
    upstream::Upstream,
    ServerOptions,
};
use std::{collections::HashMap, time::Duration};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_balances_fails_over_and_survives_the_control_plane() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = start_cluster(root.path(), 1, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let cp = nodes[0].grpc.clone();

    let e1 = Upstream::start("e1").await;
    let mut e2 = Upstream::start("e2").await;
    let w1 = Upstream::start("w1").await;
    let port = free_port();
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1, zone: us-east-1a}}\n---\n\
         kind: Cluster\nmetadata: {{name: west}}\nspec: {{region: us-west-2, zone: us-west-2a}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}, lb: round_robin, timeout: 5s, retries: {{attempts: 2, on: [connect-failure, 5xx]}}}}\n---\n\
         {}---\n{}---\n\
         kind: FailoverPolicy\nmetadata: {{name: web, namespace: shop}}\nspec: {{service: shop/web, order: [east, west]}}\n",
        endpoints("east", "us-east-1a", &[(e1.port, 1, "healthy"), (e2.port, 3, "healthy")]),
        endpoints("west", "us-west-2a", &[(w1.port, 1, "healthy")]),
    );
    let applied = cli(&cp, &["apply", "-f", "-"], Some(&mesh));
    assert!(applied.ok, "{}", applied.stderr);

    let mut proxy = ProxyProcess::new(root.path(), "proxy-east", "east", &[&cp]);
    proxy.start();
    let client = proxy::client();
    let addr = format!("127.0.0.1:{port}");
    wait_routed(&addr).await;
    let (code, _) = http::get(&proxy.admin, "/ready").await.expect("admin");
    assert_eq!(code, 200);
    let (_, metrics) = http::get(&proxy.admin, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains("meridian_proxy_request_duration_seconds_bucket"),
        "{metrics}"
    );

    // Weights 1:3 in the local priority: 25% +/- 3% over 4,000 requests; nothing crosses to west.
    let counts = spread(&client, &addr, 4_000).await;
    let share = *counts.get("e1").unwrap_or(&0) as f64 / 4_000.0;
    assert!((share - 0.25).abs() <= 0.03, "{counts:?}");
    assert!(!counts.contains_key("w1"), "{counts:?}");

    // An endpoint dies without the control plane knowing: retries hide it
    // from clients, and its ejection takes three quarters of the local
    // priority's weight out, so (at overprovisioning 1.4) 35% stays on e1
    // and the rest spills to west.
    e2.down().await;
    let counts = spread(&client, &addr, 200).await;
    let (e1_count, w1_count) = (
        counts.get("e1").unwrap_or(&0),
        counts.get("w1").unwrap_or(&0),
    );
    assert_eq!(e1_count + w1_count, 200, "{counts:?}");
    assert!((40..=100).contains(e1_count), "about 35% on e1: {counts:?}");
    e2.up().await;

    // The local priority marked unhealthy: traffic fails over to west, and comes back.
    let down = endpoints(
        "east",
        "us-east-1a",
        &[(e1.port, 1, "unhealthy"), (e2.port, 3, "unhealthy")],
    );
    assert!(cli(&cp, &["apply", "-f", "-"], Some(&down)).ok);
    eventually(WAIT, "failover to west", || async {
        let counts = spread(&client, &addr, 20).await;
        (counts.get("w1") == Some(&20)).then_some(())
    })
    .await;
    let up = endpoints(
        "east",
        "us-east-1a",
        &[(e1.port, 1, "healthy"), (e2.port, 3, "healthy")],
    );
    assert!(cli(&cp, &["apply", "-f", "-"], Some(&up)).ok);
    eventually(WAIT, "traffic back in east", || async {
        let counts = spread(&client, &addr, 20).await;
        (!counts.contains_key("w1") && counts.values().sum::<usize>() == 20).then_some(())
    })
    .await;

    // The control plane stops: traffic goes on.
    nodes[0].kill();
    let counts = spread(&client, &addr, 100).await;
    assert_eq!(
        counts.get("e1").unwrap_or(&0) + counts.get("e2").unwrap_or(&0),
        100,
        "{counts:?}"
    );

    // The proxy restarts while the control plane is still down: it routes from its saved state.
    proxy.kill();
    proxy.start();
    eventually(
        WAIT,
        "the restarted proxy to route from its saved state",
        || async {
            let (status, _) = proxy::get(&client, &addr, "web.shop", "/").await?;
            (status == 200).then_some(())
        },
    )
    .await;
    let counts = spread(&client, &addr, 100).await;
    assert_eq!(
        counts.get("e1").unwrap_or(&0) + counts.get("e2").unwrap_or(&0),
        100,
        "{counts:?}"
    );

    // An unknown host is a clear 404, not an error for anyone else.
    let (status, body) = proxy::get(&client, &addr, "nope.shop", "/")
        .await
        .expect("response");
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint_and_readmits_it() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    let good = Upstream::start("good").await;
    let bad = Upstream::start("bad").await;
    let port = free_port();
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1, zone: us-east-1a}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}, \
         outlierDetection: {{consecutive5xx: 3, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 50}}}}\n---\n{}",
        endpoints("east", "us-east-1a", &[(good.port, 1, "healthy"), (bad.port, 1, "healthy")]),
    );
    let (proxy, addr) = routed_proxy(root.path(), &cp, "proxy-od", &mesh, port).await;
    let client = proxy::client();

    bad.fail(true);
    // Without retries, the failing endpoint's 500s reach clients until it is ejected.
    eventually(WAIT, "the failing endpoint to be ejected", || async {
        let (_, body) = http::get(&proxy.admin, "/clusters").await?;
        let value: serde_json::Value = serde_json::from_str(&body).ok()?;
        let ejected = value["hosts"]
            .as_array()?
            .iter()
            .any(|h| h["address"] == format!("127.0.0.1:{}", bad.port) && h["healthy"] == false);
        if !ejected {
            spread(&client, &addr, 10).await;
        }
        ejected.then_some(())
    })
    .await;
    let counts = spread(&client, &addr, 50).await;
    assert_eq!(counts.get("good"), Some(&50), "{counts:?}");

    bad.fail(false);
    eventually(
        WAIT,
        "the endpoint to be readmitted after its ejection time",
        || async {
            let counts = spread(&client, &addr, 20).await;
            counts.contains_key("bad").then_some(())
        },
    )
    .await;
}

/// A configuration update (here: another service added) keeps what it does
/// not change: a host failing its active health checks stays out of
/// rotation, rather than coming back until its checks fail again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_results_survive_a_configuration_update() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    let steady = Upstream::start("steady").await;
    let flaky = Upstream::start("flaky").await;
    let (port, other_port) = (free_port(), free_port());
    // Slow checks: after an update that forgot them, the host would be back
    // for seconds before two more checks failed.
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1, zone: us-east-1a}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}, \
         healthCheck: {{http: {{path: /healthz}}, interval: 2s, timeout: 500ms, unhealthyThreshold: 2, healthyThreshold: 2}}}}\n---\n{}",
        endpoints("east", "us-east-1a", &[(steady.port, 1, "healthy"), (flaky.port, 1, "healthy")]),
    );
    flaky.fail(true);
    let (proxy, addr) = routed_proxy(root.path(), &cp, "proxy-hc-update", &mesh, port).await;
    let clusters = || {
        let admin = proxy.admin.clone();
        async move {
            let (_, body) = http::get(&admin, "/clusters").await?;
            serde_json::from_str::<serde_json::Value>(&body).ok()
        }
    };
    let flaky_address = format!("127.0.0.1:{}", flaky.port);
    let flaky_healthy = |value: &serde_json::Value| {
        value["hosts"]
            .as_array()
            .and_then(|hosts| {
                hosts
                    .iter()
                    .find(|h| h["address"] == flaky_address.as_str())
            })
            .map(|h| h["healthy"] == true)
    };
    eventually(WAIT, "the failing host to be checked out", || async {
        (flaky_healthy(&clusters().await?) == Some(false)).then_some(())
    })
    .await;
    let other = format!(
        "kind: Service\nmetadata: {{name: other, namespace: shop}}\nspec: {{protocol: http, port: {other_port}}}\n---\n\
         kind: Endpoints\nmetadata: {{name: other, namespace: shop, cluster: east}}\nspec: {{endpoints: [{{address: 127.0.0.1, port: {}}}]}}\n",
        steady.port
    );
    let applied = meridian_tests::cli(&cp, &["apply", "-f", "-"], Some(&other));
    assert!(applied.ok, "{}", applied.stderr);
    let updated = eventually(WAIT, "the update to be installed", || async {
        let value = clusters().await?;
        let hosts = value["hosts"].as_array()?;
        hosts
            .iter()
            .any(|h| h["cluster"].as_str().is_some_and(|c| c.contains("other")))
            .then_some(value)
    })
    .await;
    assert_eq!(
        flaky_healthy(&updated),
        Some(false),
        "the update put a host failing its checks back into rotation"
    );
    let client = proxy::client();
    let counts = spread(&client, &addr, 20).await;
    assert_eq!(counts.get("steady"), Some(&20), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_a_host_out_and_back() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    let steady = Upstream::start("steady").await;
    let flaky = Upstream::start("flaky").await;
    let port = free_port();
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1, zone: us-east-1a}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}, \
         healthCheck: {{http: {{path: /healthz}}, interval: 100ms, timeout: 500ms, unhealthyThreshold: 2, healthyThreshold: 2}}}}\n---\n{}",
        endpoints("east", "us-east-1a", &[(steady.port, 1, "healthy"), (flaky.port, 1, "healthy")]),
    );
    let (proxy, addr) = routed_proxy(root.path(), &cp, "proxy-hc", &mesh, port).await;
    let client = proxy::client();
    let flaky_healthy = |want: bool| {
        let admin = proxy.admin.clone();
        let address = format!("127.0.0.1:{}", flaky.port);
        move || {
            let (admin, address) = (admin.clone(), address.clone());
            async move {
                let (_, body) = http::get(&admin, "/clusters").await?;
                let value: serde_json::Value = serde_json::from_str(&body).ok()?;
                value["hosts"]
                    .as_array()?
                    .iter()
                    .any(|h| h["address"] == address && h["healthy"] == want)
                    .then_some(())
            }
        }
    };
    // No traffic needed: the checks alone take the host out.
    flaky.fail(true);
    eventually(
        WAIT,
        "the failing host to be checked out",
        flaky_healthy(false),
    )
    .await;
    let counts = spread(&client, &addr, 40).await;
    assert_eq!(counts.get("steady"), Some(&40), "{counts:?}");
    flaky.fail(false);
    eventually(
        WAIT,
        "the host to pass its checks again",
        flaky_healthy(true),
    )
    .await;
    eventually(WAIT, "traffic to reach it again", || async {
        spread(&client, &addr, 20)
            .await
            .contains_key("flaky")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_listener_closes_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = OneEndpoint::start("proxy-garbage", &[]).await;
    let (proxy, addr) = (&mesh.proxy, mesh.addr.clone());
    let client = proxy::client();

    let oversized = format!(
        "GET / HTTP/1.1\r\nHost: web.shop\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let payloads: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02 not http at all\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: web.sh".to_vec(),
        oversized.into_bytes(),
        // The HTTP/2 preface followed by a frame with a bogus length and type.
        [
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".as_slice(),
            &[0xff, 0xff, 0xff, 0x09, 0xff, 0, 0, 0, 1, 1, 2, 3],
        ]
        .concat(),
    ];
    for payload in payloads {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let _ = stream.write_all(&payload).await;
        let _ = stream.shutdown().await;
        let mut sink = Vec::new();
        // The proxy answers with an error or closes; either way the read ends.
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "the proxy kept a garbage connection open");
        // Everyone else is served as before.
        let (status, body) = proxy::get(&client, &addr, "web.shop", "/")
            .await
            .expect("a response");
        assert_eq!((status, body.as_str()), (200, "up"));
    }
    let (code, _) = http::get(&proxy.admin, "/ready").await.expect("admin");
    assert_eq!(code, 200);

    // Requests for hosts the proxy does not know are counted, but a Host
    // header never becomes a metric label (a client could grow them without bound).
    for i in 0..20 {
        let (status, _) = http::get_host(&addr, &format!("nowhere-{i}.example"), "/")
            .await
            .expect("a response");
        assert_eq!(status, 404);
    }
    let (_, metrics) = http::get(&proxy.admin, "/metrics").await.expect("metrics");
    assert!(!metrics.contains("nowhere-"), "{metrics}");
    assert!(metrics.contains("outcome=\"no_route\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_send_nothing_or_a_slow_head_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = OneEndpoint::start("proxy-slow", &["--header-read-timeout", "1"]).await;
    let addr = mesh.addr.clone();

    // One connection never sends a byte; another sends half a request head and stops.
    let mut idle = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: web.shop\r\nX-Slow: ")
        .await
        .expect("write");
    for (what, stream) in [
        ("an idle connection", &mut idle),
        ("a slow head", &mut slow),
    ] {
        let mut sink = Vec::new();
        // The proxy closes it (the read ends); without the timeout it would wait for ever.
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "{what} was left open");
    }
    let client = proxy::client();
    let (status, body) = proxy::get(&client, &addr, "web.shop", "/")
        .await
        .expect("a response");
    assert_eq!((status, body.as_str()), (200, "up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_attempts_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = OneEndpoint::start("proxy-smuggle", &[]).await;
    let addr = mesh.addr.clone();
    // (Content-Length with Transfer-Encoding is read as RFC 9112 6.1 says:
    // Transfer-Encoding wins and Content-Length is removed before forwarding,
    // so the proxy and the upstream frame the body alike.)
    let attempts: [(&str, &[u8]); 3] = [
        (
            "two different Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: web.shop\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
        ),
        (
            "obsolete line folding",
            b"GET / HTTP/1.1\r\nHost: web.shop\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "an invalid chunk size",
            b"POST / HTTP/1.1\r\nHost: web.shop\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (what, bytes) in attempts {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        stream.write_all(bytes).await.expect("write");
        let mut response = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await;
        assert!(read.is_ok(), "{what}: the connection was left open");
        let text = String::from_utf8_lossy(&response);
        // Refused with 400, or the connection closed; never forwarded as two requests.
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 400"),
            "{what}: {text}"
        );
        assert!(
            !text.contains("\r\n\r\nup"),
            "{what} reached the upstream: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_services_are_proxied() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    // An echo server that prefixes what it echoes with its name.
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo");
    let echo_port = echo.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0
                        || stream
                            .write_all(&[b"echo:", &buf[..n]].concat())
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    let port = free_port();
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1}}\n---\n\
         kind: Service\nmetadata: {{name: db, namespace: shop}}\nspec: {{protocol: tcp, port: {port}}}\n---\n\
         kind: Endpoints\nmetadata: {{name: db, namespace: shop, cluster: east}}\nspec: {{endpoints: [{{address: 127.0.0.1, port: {echo_port}}}]}}\n"
    );
    assert!(cli(&cp, &["apply", "-f", "-"], Some(&mesh)).ok);
    let mut proxy = ProxyProcess::new(root.path(), "proxy-tcp", "east", &[&cp]);
    proxy.start();
    let reply = eventually(WAIT, "a TCP round trip through the proxy", || async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await;
    assert_eq!(reply, "echo:ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breakers_refuse_what_exceeds_the_limit() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    let upstream = Upstream::start("slow").await;
    let port = free_port();
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}, \
         circuitBreaker: {{maxConnections: 100, maxPendingRequests: 0, maxRequests: 2}}}}\n---\n{}",
        endpoints("east", "us-east-1a", &[(upstream.port, 1, "healthy")]),
    );
    let (proxy, addr) = routed_proxy(root.path(), &cp, "proxy-cb", &mesh, port).await;
    upstream.slow(Duration::from_millis(800));
    // A connection each, all at once.
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move { http::get_host(&addr, "web.shop", "/").await })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("task").expect("response").0);
    }

    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert!((1..=2).contains(&ok) && ok + refused == 8, "{statuses:?}");

    // One connection and one pending request: of four at once, two are served
    // (one waits for the other's connection) and two are refused.
    let limits = mesh.replace(
        "maxConnections: 100, maxPendingRequests: 0, maxRequests: 2",
        "maxConnections: 1, maxPendingRequests: 1, maxRequests: 100",
    );
    assert!(cli(&cp, &["apply", "-f", "-"], Some(&limits)).ok);
    eventually(WAIT, "the new limits to reach the proxy", || async {
        let (_, dump) = http::get(&proxy.admin, "/config_dump").await?;
        dump.contains("\"max_pending_requests\":1").then_some(())
    })
    .await;
    // Slow enough that all four are in flight together even on a loaded machine.
    upstream.slow(Duration::from_secs(3));
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move { http::get_host(&addr, "web.shop", "/").await })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("task").expect("response").0);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        vec![200, 200, 503, 503],
        "one served, one pending then served, two refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    let upstream = Upstream::start("slow").await;
    let port = free_port();
    let mesh = one_endpoint_mesh(port, upstream.port);
    let (mut proxy, addr) = routed_proxy(root.path(), &cp, "proxy-drain", &mesh, port).await;
    upstream.slow(Duration::from_millis(1_500));
    let in_flight = {
        let addr = addr.clone();
        tokio::spawn(async move { http::get_host(&addr, "web.shop", "/").await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.terminate();
    let (status, body) = in_flight
        .await
        .expect("task")
        .expect("the request in flight completes");
    assert_eq!((status, body.as_str()), (200, "slow"));
    let deadline = std::time::Instant::now() + WAIT;
    while !proxy.exited() {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "a drained proxy must not accept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_endpoints_killed_under_load_fail_over_without_client_errors() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    let mut e1 = Upstream::start("e1").await;
    let mut e2 = Upstream::start("e2").await;
    let w1 = Upstream::start("w1").await;
    let port = free_port();
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1, zone: us-east-1a}}\n---\n\
         kind: Cluster\nmetadata: {{name: west}}\nspec: {{region: us-west-2, zone: us-west-2a}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}, \
         retries: {{attempts: 3, on: [connect-failure, 5xx]}}, \
         outlierDetection: {{consecutive5xx: 1, interval: 1s, baseEjectionTime: 2s, maxEjectionPercent: 100}}}}\n---\n\
         {}---\n{}---\n\
         kind: FailoverPolicy\nmetadata: {{name: web, namespace: shop}}\nspec: {{service: shop/web, order: [east, west]}}\n",
        endpoints("east", "us-east-1a", &[(e1.port, 1, "healthy"), (e2.port, 1, "healthy")]),
        endpoints("west", "us-west-2a", &[(w1.port, 1, "healthy")]),
    );
    let (_proxy, addr) = routed_proxy(root.path(), &cp, "proxy-failover", &mesh, port).await;
    let client = proxy::client();
    let before = spread(&client, &addr, 50).await;
    assert!(!before.contains_key("w1"), "{before:?}");

    // Both local endpoints die under steady load; the control plane is not told.
    e1.down().await;
    e2.down().await;
    let during = spread(&client, &addr, 200).await;
    assert_eq!(
        during.get("w1"),
        Some(&200),
        "every request answered, from west: {during:?}"
    );

    // They come back: after their ejection time, traffic returns to east.
    e1.up().await;
    e2.up().await;
    eventually(WAIT, "traffic back in east", || async {
        let counts = spread(&client, &addr, 20).await;
        (counts.get("e1").unwrap_or(&0) + counts.get("e2").unwrap_or(&0) == 20).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_clients_and_moves_few_when_an_endpoint_is_added() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    let mut upstreams = Vec::new();
    for name in ["h1", "h2", "h3", "h4", "h5"] {
        upstreams.push(Upstream::start(name).await);
    }
    let port = free_port();
    let service = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1, zone: us-east-1a}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}, lb: ring_hash, hashOn: \"header:x-user\"}}\n---\n"
    );
    let four: Vec<(u16, u32, &str)> = upstreams[..4]
        .iter()
        .map(|u| (u.port, 1, "healthy"))
        .collect();
    assert!(
        cli(
            &cp,
            &["apply", "-f", "-"],
            Some(&(service.clone() + &endpoints("east", "us-east-1a", &four)))
        )
        .ok
    );
    let mut proxy = ProxyProcess::new(root.path(), "proxy-hash", "east", &[&cp]);
    proxy.start();
    let addr = format!("127.0.0.1:{port}");
    wait_routed(&addr).await;
    let assignment = || async {
        let mut seen = Vec::new();
        for user in 0..200 {
            let user = user.to_string();
            let (_, body) = http::get_with(&addr, "web.shop", "/", &[("x-user", &user)])
                .await
                .expect("response");
            seen.push(body);
        }
        seen
    };
    let first = assignment().await;
    assert_eq!(
        assignment().await,
        first,
        "every client stays on its endpoint"
    );
    assert!(
        first
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= 3,
        "clients spread over the endpoints"
    );

    let five: Vec<(u16, u32, &str)> = upstreams.iter().map(|u| (u.port, 1, "healthy")).collect();
    assert!(
        cli(
            &cp,
            &["apply", "-f", "-"],
            Some(&endpoints("east", "us-east-1a", &five))
        )
        .ok
    );
    let after = eventually(WAIT, "the fifth endpoint to take clients", || async {
        let seen = assignment().await;
        seen.iter().any(|b| b == "h5").then_some(seen)
    })
    .await;
    let moved = first.iter().zip(&after).filter(|(a, b)| a != b).count();
    assert!(
        moved <= 200 * 35 / 100,
        "{moved} of 200 clients moved; ideal is about 40"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_prefers_the_idle_endpoint() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    let busy = Upstream::start("busy").await;
    let idle = Upstream::start("idle").await;
    let port = free_port();
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}, lb: least_request}}\n---\n{}",
        endpoints("east", "us-east-1a", &[(busy.port, 1, "healthy"), (idle.port, 1, "healthy")]),
    );
    let (_proxy, addr) = routed_proxy(root.path(), &cp, "proxy-lr", &mesh, port).await;
    // Requests to "busy" take long, so they pile up there; least request sends new ones to "idle".
    busy.slow(Duration::from_millis(1_500));
    // With two endpoints, power of two choices sends a request to the busy one
    // only when both choices land on it (a quarter of the time): about 60 of 80
    // go to the idle one, where round robin would send 40.
    let requests: Vec<_> = (0..80)
        .map(|i| {
            let addr = addr.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 10)).await;
                http::get_host(&addr, "web.shop", "/").await
            })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for request in requests {
        let (_, body) = request.await.expect("task").expect("response");
        *counts.entry(body).or_insert(0) += 1;
    }
    let to_idle = counts.get("idle").copied().unwrap_or(0);
    assert!(
        to_idle >= 28,
        "least request should favour the idle endpoint: {counts:?}"
    );
}
