//! One control-plane node driven through the CLI and the admin API: the
//! documented manifests, output formats, validation that changes nothing,
//! optimistic concurrency, watch, health endpoints and restart from disk.

use meridian_identity::tls::Dialer;
use meridian_proto::raft_wire::{self, Kind};
use meridian_proto::v1::{watch_event::EventType, PutRequest, WatchRequest};
use meridian_tests::{cli, eventually, http, pki::read_raft_frame, ServerNode, ServerOptions};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(30);

const MESH: &str = r#"
kind: Cluster
metadata: {name: us-east-1a}
spec: {region: us-east-1, zone: us-east-1a}
---
kind: Cluster
metadata: {name: us-west-2a}
spec: {region: us-west-2, zone: us-west-2a}
---
kind: Service
metadata: {name: checkout, namespace: shop}
spec:
  protocol: http
  port: 8080
  lb: least_request
  timeout: 5s
  retries: {attempts: 2, perTryTimeout: 1s, on: [connect-failure, reset, 5xx]}
  outlierDetection: {consecutive5xx: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  circuitBreaker: {maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024}
  healthCheck: {http: {path: /healthz}, interval: 5s, unhealthyThreshold: 3, healthyThreshold: 2}
---
kind: Service
metadata: {name: checkout-v1, namespace: shop}
spec: {protocol: http, port: 8080}
---
kind: Service
metadata: {name: checkout-v2, namespace: shop}
spec: {protocol: http, port: 8080, lb: ring_hash, hashOn: "header:x-user"}
---
kind: Endpoints
metadata: {name: checkout, namespace: shop, cluster: us-east-1a}
spec:
  endpoints:
  - {address: 10.0.0.7, port: 8080, weight: 1, zone: us-east-1a, health: healthy}
  - {address: 10.0.0.8, port: 8080, weight: 3, zone: us-east-1a, health: draining}
---
kind: TrafficSplit
metadata: {name: checkout, namespace: shop}
spec: {service: shop/checkout, backends: [{service: shop/checkout-v1, weight: 90}, {service: shop/checkout-v2, weight: 10}]}
---
kind: FailoverPolicy
metadata: {name: checkout, namespace: shop}
spec: {service: shop/checkout, order: [us-east-1a, us-west-2a], overprovisioningFactor: 1.4}
"#;

fn start_single(root: &std::path::Path) -> ServerNode {
    let node = ServerNode::new(root, 1, ServerOptions::default());
    let members = ServerNode::initial_cluster(&[&node]);
    let mut node = node.with_initial_cluster(&members);
    node.start();
    node
}

async fn wait_ready(node: &ServerNode) {
    eventually(WAIT, "the node to become ready", || async {
        let (code, _) = http::get(&node.http, "/readyz").await?;
        (code == 200).then_some(())
    })
    .await;
}

fn json(run: &meridian_tests::CliRun) -> serde_json::Value {
    assert!(run.ok, "command failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_applies_reads_validates_and_survives_restart() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut node = start_single(root.path());
    wait_ready(&node).await;
    let server = node.grpc.clone();

    // The documented manifests apply as one batch.
    let applied = cli(&server, &["apply", "-f", "-"], Some(MESH));
    assert!(applied.ok, "apply failed: {}", applied.stderr);
    assert_eq!(applied.stdout.lines().count(), 8, "{}", applied.stdout);

    // get -o json prints {"items": [...]} in manifest shape plus metadata.revision.
    let services = json(&cli(&server, &["get", "services", "-o", "json"], None));
    let items = services["items"].as_array().expect("items");
    assert_eq!(items.len(), 3);
    let checkout = items
        .iter()
        .find(|i| i["metadata"]["name"] == "checkout")
        .expect("checkout listed");
    assert_eq!(checkout["kind"], "Service");
    assert_eq!(checkout["metadata"]["namespace"], "shop");
    assert_eq!(checkout["spec"]["lb"], "least_request");
    assert_eq!(checkout["spec"]["retries"]["perTryTimeout"], "1s");
    assert!(checkout["metadata"]["revision"]
        .as_u64()
        .is_some_and(|r| r > 0));

    let endpoints = json(&cli(&server, &["get", "endpoints", "-o", "json"], None));
    assert_eq!(endpoints["items"][0]["metadata"]["cluster"], "us-east-1a");
    assert_eq!(
        endpoints["items"][0]["spec"]["endpoints"][1]["health"],
        "draining"
    );

    let table = cli(&server, &["get", "trafficsplits"], None);
    assert!(
        table.ok && table.stdout.contains("shop/checkout-v1=90"),
        "{}",
        table.stdout
    );
    let yaml = cli(
        &server,
        &[
            "get",
            "failoverpolicy",
            "checkout",
            "-n",
            "shop",
            "-o",
            "yaml",
        ],
        None,
    );
    let parsed: serde_yaml::Value = serde_yaml::from_str(&yaml.stdout).expect("yaml");
    assert_eq!(
        parsed["spec"]["order"][1],
        serde_yaml::Value::from("us-west-2a")
    );

    // Output of get -o json applies again unchanged, keeping revisions.
    let again = cli(
        &server,
        &["apply", "-f", "-"],
        Some(&serde_json::to_string(&services).expect("json")),
    );
    assert!(again.ok, "{}", again.stderr);
    let services_after = json(&cli(&server, &["get", "services", "-o", "json"], None));
    assert_eq!(
        services_after, services,
        "re-applying identical objects must not change revisions"
    );

    // Status.
    let status = json(&cli(&server, &["status", "-o", "json"], None));
    assert_eq!(status["nodeId"], 1);
    assert_eq!(status["leader"], 1);
    for field in ["term", "commitIndex", "appliedIndex"] {
        assert!(
            status[field].as_u64().is_some_and(|v| v > 0),
            "{field} in {status}"
        );
    }
    assert_eq!(status["members"].as_array().map(Vec::len), Some(1));

    // Invalid writes: a clear one-line error naming the field, non-zero exit, nothing changed.
    let before = cli(&server, &["get", "services", "-o", "json"], None).stdout;
    let applied_before = status["appliedIndex"].as_u64();
    let invalid = [
        ("kind: Gateway\nmetadata: {name: a}\nspec: {}", "unknown kind"),
        ("kind: Service\nmetadata: {name: Bad_Name, namespace: shop}\nspec: {protocol: http, port: 80}", "metadata.name"),
        (
            "kind: Endpoints\nmetadata: {name: checkout, namespace: shop, cluster: us-east-1a}\nspec: {endpoints: [{address: 10.0.0.1, port: 80, weight: 0}, {address: 10.0.0.2, port: 80, weight: 0}]}",
            "weight",
        ),
        (
            "kind: Endpoints\nmetadata: {name: checkout, namespace: shop, cluster: us-east-1a}\nspec: {endpoints: [{address: 10.0.0.1, port: 80, weight: -2}]}",
            "spec.endpoints[0].weight",
        ),
        (
            "kind: TrafficSplit\nmetadata: {name: loop, namespace: shop}\nspec: {service: shop/checkout, backends: [{service: shop/checkout, weight: 1}]}",
            "spec.backends[0].service",
        ),
        (
            "kind: TrafficSplit\nmetadata: {name: ghost, namespace: shop}\nspec: {service: shop/checkout, backends: [{service: shop/ghost, weight: 1}]}",
            "spec.backends[0].service: unknown Service shop/ghost",
        ),
        (
            "kind: FailoverPolicy\nmetadata: {name: checkout, namespace: shop}\nspec: {service: shop/checkout, order: [us-east-1a, mars-1a]}",
            "spec.order[1]: unknown cluster 'mars-1a'",
        ),
        (
            "kind: Service\nmetadata: {name: fine, namespace: shop}\nspec: {protocol: http, port: 80}\n---\nkind: Service\nmetadata: {name: broken, namespace: shop}\nspec: {protocol: carrier-pigeon, port: 80}",
            "document 2: spec.protocol",
        ),
    ];
    for (manifest, needle) in invalid {
        let run = cli(&server, &["apply", "-f", "-"], Some(manifest));
        assert!(!run.ok, "accepted invalid manifest:\n{manifest}");
        assert!(
            run.stderr.contains(needle),
            "error for\n{manifest}\nshould mention '{needle}', got: {}",
            run.stderr
        );
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "not one line: {}",
            run.stderr
        );
    }
    let refused_delete = cli(
        &server,
        &["delete", "service", "checkout-v1", "-n", "shop"],
        None,
    );
    assert!(
        !refused_delete.ok && refused_delete.stderr.contains("still referred to"),
        "{}",
        refused_delete.stderr
    );
    let unknown = cli(&server, &["get", "service", "nope", "-n", "shop"], None);
    assert!(
        !unknown.ok && unknown.stderr.contains("not found"),
        "{}",
        unknown.stderr
    );
    assert_eq!(
        cli(&server, &["get", "services", "-o", "json"], None).stdout,
        before
    );
    let status_after = json(&cli(&server, &["status", "-o", "json"], None));
    assert_eq!(
        status_after["appliedIndex"].as_u64(),
        applied_before,
        "a refused write reached the log"
    );

    // Optimistic concurrency through the API.
    let mut client = node.client().await.expect("client");
    let revision = checkout["metadata"]["revision"].as_u64().expect("revision");
    let mut manifest = checkout.clone();
    manifest["spec"]["port"] = 9090.into();
    let stale = client
        .put(PutRequest {
            manifest_json: manifest.to_string(),
            expected_revision: Some(revision - 1),
        })
        .await
        .expect_err("stale revision");
    assert_eq!(stale.code(), tonic::Code::Aborted);
    let fresh = client
        .put(PutRequest {
            manifest_json: manifest.to_string(),
            expected_revision: Some(revision),
        })
        .await
        .expect("current revision")
        .into_inner();
    assert!(fresh.revisions[0] > revision);
    let oversized = client
        .put(PutRequest {
            manifest_json: "x".repeat(5 * 1024 * 1024),
            expected_revision: None,
        })
        .await
        .expect_err("oversized message");
    assert_eq!(oversized.code(), tonic::Code::OutOfRange, "{oversized:?}");

    // Watch from revision 0 lists current objects, then streams changes.
    let mut stream = client
        .watch(WatchRequest {
            kind: "Cluster".into(),
            from_revision: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    for _ in 0..2 {
        let event = stream.message().await.expect("stream").expect("event");
        assert_eq!(event.r#type, EventType::Added as i32);
    }
    let added = cli(
        &server,
        &["apply", "-f", "-"],
        Some("kind: Cluster\nmetadata: {name: eu-west-1a}\nspec: {region: eu-west-1}"),
    );
    assert!(added.ok, "{}", added.stderr);
    let event = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a watch event in time")
        .expect("stream")
        .expect("event");
    assert_eq!(event.key.expect("key").name, "eu-west-1a");
    let deleted = cli(&server, &["delete", "cluster", "eu-west-1a"], None);
    assert!(deleted.ok, "{}", deleted.stderr);
    let event = stream.message().await.expect("stream").expect("event");
    assert_eq!(event.r#type, EventType::Deleted as i32);

    // HTTP: health, readiness, metrics.
    let (code, _) = http::get(&node.http, "/healthz").await.expect("healthz");
    assert_eq!(code, 200);
    let (code, metrics) = http::get(&node.http, "/metrics").await.expect("metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("meridian_raft_applied_index"), "{metrics}");
    assert!(
        metrics.contains("meridian_admin_requests_total"),
        "{metrics}"
    );

    // A restart recovers everything from the node's own disk.
    let services = cli(&server, &["get", "services", "-o", "json"], None).stdout;
    node.kill();
    node.start();
    wait_ready(&node).await;
    let recovered = eventually(WAIT, "reads after restart", || async {
        let run = cli(&server, &["get", "services", "-o", "json"], None);
        run.ok.then_some(run.stdout)
    })
    .await;
    assert_eq!(recovered, services);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_server_refuses_non_loopback_addresses() {
    let root = tempfile::tempdir().expect("temp dir");
    let output = std::process::Command::new(meridian_tests::binary("meridian"))
        .args([
            "--insecure",
            "server",
            "--node-id",
            "1",
            "--grpc-addr",
            "0.0.0.0:7400",
        ])
        .arg("--data-dir")
        .arg(root.path())
        .output()
        .expect("run meridian server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
    assert!(
        !root.path().join("db").exists(),
        "a refused start must not create state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_cluster_adds_no_member_beyond_loopback() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = meridian_tests::start_cluster(root.path(), 1, ServerOptions::default());
    meridian_tests::agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let added = cli(
        &nodes[0].grpc,
        &["members", "add", "2", "10.1.2.3:7400"],
        None,
    );
    assert!(!added.ok, "{}", added.stdout);
    assert!(added.stderr.contains("loopback"), "{}", added.stderr);
    let listed = cli(&nodes[0].grpc, &["members", "list"], None);
    assert!(listed.ok, "{}", listed.stderr);
    assert!(!listed.stdout.contains("10.1.2.3"), "{}", listed.stdout);
}

/// A reader that goes away (`meridian get services | head -1`) ends the
/// command quietly: no panic and a successful exit, as with SIGPIPE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_ends_quietly_when_its_reader_goes_away() {
    let root = tempfile::tempdir().expect("temp dir");
    let node = start_single(root.path());
    wait_ready(&node).await;
    let applied = cli(&node.grpc, &["apply", "-f", "-"], Some(MESH));
    assert!(applied.ok, "{}", applied.stderr);
    for _ in 0..3 {
        let mut child = std::process::Command::new(meridian_tests::binary("meridian"))
            .args([
                "--insecure",
                "--server",
                &node.grpc,
                "get",
                "services",
                "-o",
                "yaml",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the CLI");
        // The reader is gone before the answer comes back.
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("the CLI ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(output.status.success(), "{}: {stderr}", output.status);
    }
}

/// A large mesh's List is larger than tonic's default 4 MiB response: the
/// CLI read 90,000 endpoints as "decoded message length too large" (found
/// by loading 100,000 endpoints for the benchmarks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_more_than_four_mib_of_endpoints() {
    let root = tempfile::tempdir().expect("temp dir");
    let node = start_single(root.path());
    wait_ready(&node).await;
    let server = node.grpc.clone();
    let cluster = r#"{"kind": "Cluster", "metadata": {"name": "c1"}, "spec": {"region": "r1"}}"#;
    assert!(cli(&server, &["apply", "-f", "-"], Some(cluster)).ok);
    // Each apply stays under the server's own 4 MiB request limit.
    for chunk in 0..9 {
        let items: Vec<serde_json::Value> = (chunk * 10..chunk * 10 + 10)
            .flat_map(|s| {
                let endpoints: Vec<serde_json::Value> = (0..1000)
                    .map(|i| serde_json::json!({"address": format!("10.{s}.{}.{}", i / 250, i % 250), "port": 8080}))
                    .collect();
                [
                    serde_json::json!({"kind": "Service", "metadata": {"name": format!("s{s}"), "namespace": "load"}, "spec": {"protocol": "http", "port": 8080}}),
                    serde_json::json!({"kind": "Endpoints", "metadata": {"name": format!("s{s}"), "namespace": "load", "cluster": "c1"}, "spec": {"endpoints": endpoints}}),
                ]
            })
            .collect();
        let manifest = serde_json::json!({ "items": items }).to_string();
        let applied = cli(&server, &["apply", "-f", "-"], Some(&manifest));
        assert!(applied.ok, "chunk {chunk}: {}", applied.stderr);
    }
    let listed = json(&cli(
        &server,
        &["get", "endpoints", "-n", "load", "-o", "json"],
        None,
    ));
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 90);
    let endpoints: usize = items
        .iter()
        .map(|i| i["spec"]["endpoints"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(endpoints, 90_000);
}

/// Raft's peer protocol takes bad input as the admin API does: a malformed
/// message gets its reason and the connection goes on; a frame that breaks
/// the framing (an unknown kind, a body over the limit) closes the
/// connection; neither changes the node's Raft state, and it goes on
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_raft_peer_messages_get_a_reason_and_change_nothing() {
    let root = tempfile::tempdir().expect("temp dir");
    let node = start_single(root.path());
    wait_ready(&node).await;
    let before = node.status().await.expect("status");
    let peer = || async {
        let mut conn = Dialer::insecure()
            .stream(&node.grpc, raft_wire::ALPN)
            .await
            .expect("connect");
        conn.write_all(raft_wire::PREFACE).await.expect("preface");
        conn
    };

    let mut conn = peer().await;
    for (kind, body) in [
        (Kind::AppendEntries, &b"{not json"[..]),
        (Kind::Vote, b"{\"vote\": 1}"),
        (Kind::InstallSnapshot, b"\x00\x00\x00\xffshort"),
        (Kind::Reply, b"{}"),
    ] {
        let frame = raft_wire::frame(kind, &[body]).expect("framed");
        conn.write_all(&frame).await.expect("sent");
        let (answer, why) = tokio::time::timeout(WAIT, read_raft_frame(&mut conn))
            .await
            .expect("in time")
            .expect("an answer");
        assert_eq!(answer, Kind::Refused, "{kind:?}: {why}");
        assert!(
            why.contains("malformed raft message")
                || why.contains("shorter than its header")
                || why.contains("not a request"),
            "{kind:?}: {why}"
        );
    }
    // An unknown kind, then a body over the limit: closed without an answer.
    conn.write_all(&[99, 0, 0, 0, 0]).await.expect("sent");
    let closed = tokio::time::timeout(WAIT, read_raft_frame(&mut conn)).await;
    assert!(matches!(closed, Ok(Err(_))), "an unknown kind: {closed:?}");
    let mut conn = peer().await;
    let over = (raft_wire::MAX_BODY as u32 + 1).to_be_bytes();
    conn.write_all(&[1, over[0], over[1], over[2], over[3]])
        .await
        .expect("sent");
    let closed = tokio::time::timeout(WAIT, read_raft_frame(&mut conn)).await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "an oversized body: {closed:?}"
    );

    let after = node.status().await.expect("status");
    assert_eq!(
        (after.term, after.leader, after.last_log_index),
        (before.term, before.leader, before.last_log_index),
        "malformed messages changed Raft state"
    );
    let applied = cli(&node.grpc, &["apply", "-f", "-"], Some(MESH));
    assert!(applied.ok, "the node goes on serving: {}", applied.stderr);
}
