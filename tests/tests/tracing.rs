//! OpenTelemetry traces from real processes to a test OTLP collector: one
//! endpoint change is one trace from the agent's source event to a proxy's
//! ACK; a proxied request continues the caller's trace; a NACK is in the
//! trace with its error; and with the collector gone everything goes on.

use meridian_tests::{
    agent::{local_web_endpoints, write_endpoint_file, AgentProcess},
    agreed_leader, cli, eventually, free_port,
    http::metric,
    otlp::{ancestry, OtlpCollector},
    proxy::ProxyProcess,
    start_cluster, xds, ServerOptions,
};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

const WAIT: Duration = Duration::from_secs(40);

/// An upstream that answers 200 and keeps the `traceparent` of every
/// request it gets.
async fn recording_upstream() -> (u16, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let record = record.clone();
        async move {
            if let Some(parent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
                record.lock().expect("lock").push(parent.to_string());
            }
            "ok"
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_is_one_trace_from_the_source_to_the_proxy_ack() {
    let root = tempfile::tempdir().expect("temp dir");
    let collector = OtlpCollector::start().await;
    let otlp = ["--otlp-endpoint".to_string(), collector.endpoint.clone()];
    let nodes = start_cluster(
        root.path(),
        3,
        ServerOptions {
            extra_args: otlp.to_vec(),
            ..ServerOptions::default()
        },
    );
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let follower = nodes.iter().find(|n| n.id != leader).expect("a follower");
    let port = free_port();
    let (upstream, seen) = recording_upstream().await;
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1, zone: us-east-1a}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}}}\n"
    );
    let applied = cli(
        &follower.grpc,
        &["apply", "-f", "-", "--trace"],
        Some(&mesh),
    );
    assert!(applied.ok, "{}", applied.stderr);
    // The CLI's --trace: the admin write and its applies are in that trace.
    let cli_trace = applied
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("trace "))
        .unwrap_or_else(|| panic!("no trace id printed: {}", applied.stdout))
        .to_string();

    let source = root.path().join("east.yaml");
    write_endpoint_file(&source, &local_web_endpoints(&[upstream]));
    let addrs: Vec<&str> = nodes.iter().map(|n| n.grpc.as_str()).collect();
    let mut agent = AgentProcess::new(
        root.path(),
        "east-agent",
        "east",
        &[follower.grpc.as_str()],
        &format!("file:{}", source.display()),
        &[&otlp[0], &otlp[1]],
    );
    agent.start();
    let mut proxy = ProxyProcess::new(root.path(), "east-proxy", "east", &addrs[..1])
        .with_args(&[&otlp[0], &otlp[1]]);
    proxy.start();
    let proxy_addr = format!("127.0.0.1:{port}");
    eventually(WAIT, "the proxy to route web.shop", || async {
        let (status, _) = meridian_tests::http::get_host(&proxy_addr, "web.shop", "/").await?;
        (status == 200).then_some(())
    })
    .await;

    let admin = eventually(WAIT, "the CLI's change in the collector", || async {
        let spans = collector.trace(&cli_trace);
        let admin = spans.iter().find(|s| s.name == "admin.Apply")?.clone();
        let applies = spans.iter().filter(|s| s.name == "raft.apply").count();
        (applies == 3).then_some(admin)
    })
    .await;
    assert_eq!(admin.instance, format!("node-{}", follower.id));

    // One endpoint change: a second endpoint in the source file.
    write_endpoint_file(&source, &local_web_endpoints(&[upstream, free_port()]));
    let trace = eventually(
        WAIT,
        "a traced push of the change ACKed by the proxy",
        || async {
            let spans = collector.spans();
            spans
                .iter()
                .filter(|s| s.name == "source.file.refresh")
                .map(|s| collector.trace(&s.trace_id))
                .find(|trace| {
                    // The change's batch (a delta), not the agent's first
                    // snapshot, which a proxy already connected also gets.
                    let change = trace.iter().any(|s| {
                        s.name == "federation.batch"
                            && s.attribute("meridian.batch.full") == Some("false")
                    });
                    // Each process exports on its own schedule: wait until
                    // every span from the push up to the source has arrived
                    // (the federation.commit span ends after the push).
                    change
                        && trace.iter().any(|s| {
                            s.name == "xds.push"
                                && s.attribute("meridian.proxy") == Some("east-proxy")
                                && s.attribute("xds.type_url")
                                    .is_some_and(|t| t.ends_with("ClusterLoadAssignment"))
                                && s.events.iter().any(|(name, _)| name == "ack")
                                && s.attribute("xds.resources") == Some("1")
                                && ancestry(trace, s).last().map(String::as_str)
                                    == Some("source.file.refresh")
                        })
                })
        },
    )
    .await;
    let names = |name: &str| trace.iter().filter(|s| s.name == name).count();
    assert_eq!(names("source.file.refresh"), 1, "{trace:#?}");
    assert_eq!(names("federation.batch"), 1);
    assert_eq!(names("federation.commit"), 1);
    let propose = trace
        .iter()
        .find(|s| s.name == "raft.propose" && s.error.is_none())
        .expect("the proposal");
    assert_eq!(
        propose.instance,
        format!("node-{leader}"),
        "proposed on the leader"
    );
    let apply_nodes: std::collections::BTreeSet<&str> = trace
        .iter()
        .filter(|s| s.name == "raft.apply")
        .map(|s| s.instance.as_str())
        .collect();
    assert!(
        apply_nodes.contains(format!("node-{}", follower.id).as_str()),
        "a follower's apply joins the trace: {apply_nodes:?}"
    );
    let push = trace
        .iter()
        .find(|s| {
            s.name == "xds.push"
                && s.attribute("meridian.proxy") == Some("east-proxy")
                && s.events.iter().any(|(name, _)| name == "ack")
        })
        .expect("the ACKed push");
    assert_eq!(
        ancestry(&trace, push),
        [
            "xds.push",
            "xds.distribute",
            "raft.apply",
            "raft.propose",
            "federation.commit",
            "federation.batch",
            "source.file.refresh"
        ],
        "every parent link holds"
    );
    // The node's summary of the change's pushes: its parent is that node's apply.
    let summary = eventually(WAIT, "the push summary", || async {
        collector
            .trace(&push.trace_id)
            .into_iter()
            .find(|s| s.name == "xds.distribute" && s.span_id == push.parent_span_id)
    })
    .await;
    assert!(
        summary.attribute("xds.pushed").is_some_and(|n| n != "0"),
        "{summary:#?}"
    );
    assert!(
        summary.attribute("xds.acked").is_some_and(|n| n != "0"),
        "{summary:#?}"
    );
    assert_eq!(summary.attribute("xds.nacked"), Some("0"));
    assert!(summary.attribute("xds.slowest_ack_ms").is_some());

    // A request with a traceparent keeps its trace id to the upstream,
    // which sees the proxy's span as its parent.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let (status, _) = meridian_tests::http::get_with(
        &proxy_addr,
        "web.shop",
        "/",
        &[("traceparent", traceparent.as_str())],
    )
    .await
    .expect("an answer");
    assert_eq!(status, 200);
    let received = seen
        .lock()
        .expect("lock")
        .iter()
        .find(|p| p.contains(trace_id))
        .cloned()
        .expect("the upstream got the trace context");
    assert!(
        !received.contains(caller_span),
        "the upstream sees a new span id: {received}"
    );
    let request = eventually(WAIT, "the proxy's request span", || async {
        collector
            .trace(trace_id)
            .into_iter()
            .find(|s| s.name == "proxy.request")
    })
    .await;
    assert_eq!(request.parent_span_id, caller_span);
    assert!(received.contains(&request.span_id), "{received}");
    assert_eq!(request.attribute("http.response.status_code"), Some("200"));
    assert!(
        request
            .attribute("meridian.cluster")
            .is_some_and(|c| c.contains("web")),
        "{request:#?}"
    );
    assert_eq!(request.service, "meridian-proxy");

    // The same path in metrics: the batch and its lag on the node the
    // agent streams to, the pushes and their ACKs on the proxy's node.
    let batches = metric(
        &follower.http,
        "meridian_federation_batch_endpoint_sets_count",
    )
    .await;
    assert!(batches >= 2.0, "batches: {batches}");
    let lag = metric(
        &follower.http,
        "meridian_federation_source_to_commit_seconds_count",
    )
    .await;
    assert!(lag >= 2.0, "source-to-commit observations: {lag}");
    let serving = nodes
        .iter()
        .find(|n| n.grpc == addrs[0])
        .expect("the proxy's node");
    assert!(
        metric(
            &serving.http,
            "meridian_xds_pushes_total{type=\"endpoint\"}"
        )
        .await
            >= 2.0
    );
    assert!(metric(&serving.http, "meridian_xds_change_to_ack_seconds_count").await >= 1.0);
    assert_eq!(
        metric(&serving.http, "meridian_xds_streams{protocol=\"delta\"}").await,
        1.0
    );
    let leader_node = nodes.iter().find(|n| n.id == leader).expect("the leader");
    assert!(
        metric(
            &leader_node.http,
            "meridian_raft_proposals_total{outcome=\"committed\"}"
        )
        .await
            >= 3.0
    );
    assert!(metric(&proxy.admin, "meridian_proxy_config_updates_total").await >= 2.0);
    drop(proxy);
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_is_in_the_trace_and_a_lost_collector_changes_nothing() {
    let root = tempfile::tempdir().expect("temp dir");
    let collector = OtlpCollector::start().await;
    let nodes = start_cluster(
        root.path(),
        1,
        ServerOptions {
            extra_args: vec!["--otlp-endpoint".into(), collector.endpoint.clone()],
            ..ServerOptions::default()
        },
    );
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let service = |timeout: &str| {
        format!(
            "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1, zone: us-east-1a}}\n---\n\
             kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: 8080, timeout: {timeout}}}\n"
        )
    };
    assert!(cli(&nodes[0].grpc, &["apply", "-f", "-"], Some(&service("5s"))).ok);
    // A client that refuses every Cluster update.
    let client = xds::sotw(&nodes[0].grpc, xds::node("refuser", "east"), None, true)
        .await
        .expect("connect");
    eventually(WAIT, "the client's first NACK", || async {
        client.with(|h| (!h.responses.is_empty()).then_some(()))
    })
    .await;
    let applied = cli(
        &nodes[0].grpc,
        &["apply", "-f", "-", "--trace"],
        Some(&service("7s")),
    );
    assert!(applied.ok, "{}", applied.stderr);
    let trace_id = applied
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("trace "))
        .expect("a trace id")
        .to_string();
    let nacked = eventually(WAIT, "the NACKed push in the trace", || async {
        collector
            .trace(&trace_id)
            .into_iter()
            .find(|s| s.name == "xds.push" && s.events.iter().any(|(n, _)| n == "nack"))
    })
    .await;
    assert_eq!(nacked.attribute("meridian.proxy"), Some("refuser"));
    let summary = eventually(WAIT, "the push summary with the NACK", || async {
        collector
            .trace(&trace_id)
            .into_iter()
            .find(|s| s.name == "xds.distribute")
    })
    .await;
    assert!(
        summary.attribute("xds.nacked").is_some_and(|n| n != "0"),
        "{summary:#?}"
    );
    assert!(summary.error.is_some(), "{summary:#?}");
    let error = nacked.error.clone().unwrap_or_default();
    assert!(error.starts_with("NACK: "), "{nacked:#?}");
    let proxies = cli(&nodes[0].grpc, &["get", "proxies", "-o", "json"], None);
    assert!(proxies.ok, "{}", proxies.stderr);
    assert!(
        proxies.stdout.contains(error.trim_start_matches("NACK: ")),
        "get proxies shows the NACK's error: {}",
        proxies.stdout
    );

    let nacks = metric(&nodes[0].http, "meridian_xds_nacks_total{type=\"cluster\"}").await;
    assert!(nacks >= 2.0, "NACKs counted: {nacks}");

    // The collector goes away: writes and pushes go on.
    collector.stop();
    for i in 0..20 {
        let applied = cli(
            &nodes[0].grpc,
            &["apply", "-f", "-", "--trace"],
            Some(&service(&format!("{}s", 10 + i))),
        );
        assert!(
            applied.ok,
            "write {i} with no collector: {}",
            applied.stderr
        );
    }
    let version = nodes[0].status().await.expect("status").applied_index;
    eventually(WAIT, "the client to be sent the last change", || async {
        client.with(|h| {
            h.responses
                .iter()
                .any(|(t, v)| {
                    // Versions are `REVISION-HASH`.
                    let revision = v.split('-').next().and_then(|r| r.parse::<u64>().ok());
                    t.ends_with("Cluster") && revision.is_some_and(|r| r >= version)
                })
                .then_some(())
        })
    })
    .await;
}
