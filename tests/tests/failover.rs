//! Cross-cluster failover with nothing but a `FailoverPolicy`: no retry or
//! outlier settings on the service. The local tier's endpoints die (SIGKILL,
//! or a network that no longer answers) under steady and concurrent GET
//! traffic through meridian-proxy: no request fails, traffic is on the next
//! tier from the first request after, and returns once the endpoints do.

use meridian_tests::{
    eventually, free_port,
    proxy::{self, control_plane, endpoints, routed_proxy, spread, WAIT},
    upstream::{Blackhole, UpstreamProcess},
};
use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

/// Clusters east and west, web.shop on `port` with no resilience settings,
/// the given endpoints, and a failover order east then west.
fn mesh(port: u16, east: &[u16], west: &[u16]) -> String {
    let healthy = |ports: &[u16]| -> Vec<(u16, u32, &str)> {
        ports.iter().map(|p| (*p, 1, "healthy")).collect()
    };
    format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1, zone: us-east-1a}}\n---\n\
         kind: Cluster\nmetadata: {{name: west}}\nspec: {{region: us-west-2, zone: us-west-2a}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}}}\n---\n\
         {}---\n{}---\n\
         kind: FailoverPolicy\nmetadata: {{name: web, namespace: shop}}\nspec: {{service: shop/web, order: [east, west]}}\n",
        endpoints("east", "us-east-1a", &healthy(east)),
        endpoints("west", "us-west-2a", &healthy(west)),
    )
}

/// Answers of concurrent GET loops, each `?delay=20` so requests are in
/// flight when endpoints die: upstream name or `HTTP CODE` → count.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<HashMap<String, usize>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: &str, loops: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(HashMap::new()));
        let tasks = (0..loops)
            .map(|_| {
                let (stop, answers, addr) = (stop.clone(), answers.clone(), addr.to_string());
                tokio::spawn(async move {
                    let client = proxy::client();
                    // Bounded: the test stops the loops, and each request has its own timeout.
                    for _ in 0..10_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let answer =
                            match proxy::get(&client, &addr, "web.shop", "/?delay=20").await {
                                Some((200, body)) => body,
                                Some((status, body)) => format!("HTTP {status}: {body}"),
                                None => "no answer".to_string(),
                            };
                        *answers
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(answer)
                            .or_insert(0) += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            tasks,
        }
    }

    fn answers(&self) -> HashMap<String, usize> {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn stop(mut self) -> HashMap<String, usize> {
        self.stop.store(true, Ordering::Relaxed);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
        self.answers()
    }
}

fn failures(answers: &HashMap<String, usize>, upstreams: &[&str]) -> usize {
    answers
        .iter()
        .filter(|(answer, _)| !upstreams.contains(&answer.as_str()))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_local_endpoints_fail_over_with_no_failed_request() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    let mut e1 = UpstreamProcess::start(root.path(), "e1").await;
    let mut e2 = UpstreamProcess::start(root.path(), "e2").await;
    let w1 = UpstreamProcess::start(root.path(), "w1").await;
    let port = free_port();
    let mesh = mesh(port, &[e1.port, e2.port], &[w1.port]);
    let (_proxy, addr) = routed_proxy(root.path(), &cp, "proxy-failover", &mesh, port).await;
    let client = proxy::client();
    let before = spread(&client, &addr, 40).await;
    assert_eq!(
        before.get("e1").unwrap_or(&0) + before.get("e2").unwrap_or(&0),
        40,
        "steady traffic stays in the local tier: {before:?}"
    );

    // Concurrent GETs in flight, then both local endpoint processes die.
    let load = Load::start(&addr, 4);
    eventually(WAIT, "the concurrent load to be served", || async {
        (load.answers().values().sum::<usize>() >= 40).then_some(())
    })
    .await;
    e1.kill();
    e2.kill();
    // The first sequential request after the kill is answered by the next tier.
    let first = proxy::get(&client, &addr, "web.shop", "/").await;
    assert_eq!(first, Some((200, "w1".to_string())));
    let served_before = load.answers().get("w1").copied().unwrap_or(0);
    eventually(WAIT, "west to carry the concurrent load", || async {
        let served = load.answers().get("w1").copied().unwrap_or(0);
        (served >= served_before + 100).then_some(())
    })
    .await;
    let answers = load.stop().await;
    assert_eq!(
        failures(&answers, &["e1", "e2", "w1"]),
        0,
        "no request failed: {answers:?}"
    );
    let after = spread(&client, &addr, 40).await;
    assert_eq!(after.get("w1"), Some(&40), "{after:?}");

    // The endpoints come back: after their ejection, traffic returns to east.
    e1.restart().await;
    e2.restart().await;
    let returned = eventually(WAIT, "traffic back in east", || async {
        let counts = spread(&client, &addr, 20).await;
        (counts.get("e1").unwrap_or(&0) + counts.get("e2").unwrap_or(&0) == 20).then_some(counts)
    })
    .await;
    assert_eq!(failures(&returned, &["e1", "e2"]), 0, "{returned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_local_tier_fails_over_within_the_connect_timeout() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    let w1 = UpstreamProcess::start(root.path(), "w1").await;
    // Every local endpoint's connections hang, as when its hosts leave the network.
    let holes = [Blackhole::start().await, Blackhole::start().await];
    let port = free_port();
    let mesh = mesh(port, &[holes[0].port, holes[1].port], &[w1.port]);
    // The first request waits out the connect timeout of each local host in
    // turn, which ejects it, and is answered by west; none after it waits.
    let (proxy, addr) = routed_proxy(root.path(), &cp, "proxy-blackhole", &mesh, port).await;
    let client = proxy::client();
    let counts = spread(&client, &addr, 30).await;
    assert_eq!(counts.get("w1"), Some(&30), "{counts:?}");
    let (_, clusters) = meridian_tests::http::get(&proxy.admin, "/clusters")
        .await
        .expect("the proxy's /clusters");
    let value: serde_json::Value = serde_json::from_str(&clusters).expect("json");
    for hole in &holes {
        let row = value["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .find(|h| h["address"] == format!("127.0.0.1:{}", hole.port))
            .cloned()
            .expect("the blackholed host");
        assert_eq!(row["ejected"], true, "{row}");
        assert_eq!(row["healthy"], false, "{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_in_flight_when_its_upstream_dies_fails_cleanly_and_is_not_replayed() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    let mut e1 = UpstreamProcess::start(root.path(), "e1").await;
    let w1 = UpstreamProcess::start(root.path(), "w1").await;
    let port = free_port();
    let mesh = mesh(port, &[e1.port], &[w1.port]);
    assert!(!w1.received("POST"));
    let (_proxy, addr) = routed_proxy(root.path(), &cp, "proxy-post", &mesh, port).await;

    let post = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let client = proxy::client();
            let request = hyper::Request::post(format!("http://{addr}/?delay=3000"))
                .header(hyper::header::HOST, "web.shop")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("request");
            let response = client.request(request).await.expect("a response");
            response.status().as_u16()
        })
    };
    // The POST is at e1 (the only local endpoint) when e1 dies.
    eventually(WAIT, "the POST to reach e1", || async {
        e1.received("POST").then_some(())
    })
    .await;
    e1.kill();
    let status = tokio::time::timeout(WAIT, post)
        .await
        .expect("the POST ends")
        .expect("the POST task");
    assert!(
        status == 502 || status == 503,
        "a POST is not replayed on west, it fails: {status}"
    );
    assert!(!w1.received("POST"), "the POST was not sent to west");
    // GETs go on, on west.
    let client = proxy::client();
    let counts = spread(&client, &addr, 10).await;
    assert_eq!(counts.get("w1"), Some(&10), "{counts:?}");
}
