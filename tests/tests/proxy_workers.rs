//! meridian-proxy's worker threads (`--workers`): each has its own listener
//! socket on the same port (SO_REUSEPORT), and the kernel spreads new
//! connections over them; every worker serves.

use meridian_tests::proxy::OneEndpoint;

/// The connections each worker accepted, from the proxy's metrics.
async fn accepted_by_worker(admin: &str) -> Vec<(String, u64)> {
    let (_, metrics) = meridian_tests::http::get(admin, "/metrics")
        .await
        .expect("metrics");
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("meridian_proxy_worker_connections_total{worker=\"")?;
            let (worker, count) = rest.split_once("\"} ")?;
            Some((worker.to_string(), count.trim().parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn every_worker_accepts_and_serves_connections() {
    let mesh = OneEndpoint::start("workers", &["--workers", "3"]).await;
    // Each request on a connection of its own: 90 connections, spread by
    // the hash of their ports; one worker missing them all is a 3·(2/3)^90
    // chance, about 4·10⁻¹⁶.
    for i in 0..90 {
        let answer = meridian_tests::http::get_host(&mesh.addr, "web.shop", "/").await;
        assert_eq!(
            answer.as_ref().map(|(s, b)| (*s, b.as_str())),
            Some((200, "up")),
            "request {i}"
        );
    }
    let accepted = accepted_by_worker(&mesh.proxy.admin).await;
    let workers: Vec<&str> = accepted.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(workers.len(), 3, "{accepted:?}");
    for (worker, count) in &accepted {
        assert!(
            *count >= 1,
            "worker {worker} accepted nothing: {accepted:?}"
        );
    }
    let total: u64 = accepted.iter().map(|(_, c)| c).sum();
    assert!(total >= 90, "{accepted:?}");
}
