//! The xDS server end to end: state-of-the-world and delta clients on
//! different control-plane nodes agree, versions match across nodes, a proxy
//! that moves nodes gets no spurious push, and malformed or refusing clients
//! disturb nobody else.

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use meridian_tests::{
    agreed_leader, cli, eventually, start_cluster,
    xds::{self, CLUSTER, ENDPOINT, LISTENER, ROUTE},
    ServerNode, ServerOptions,
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
const MESH: &str = include_str!("../../examples/mesh.yaml");

fn apply(node: &ServerNode, manifest: &str) {
    let run = cli(&node.grpc, &["apply", "-f", "-"], Some(manifest));
    assert!(run.ok, "apply failed: {}", run.stderr);
}

fn east_endpoints(second_health: &str, extra: &str) -> String {
    format!(
        "kind: Endpoints\nmetadata: {{name: checkout, namespace: shop, cluster: us-east-1a}}\nspec:\n  endpoints:\n  - {{address: 10.0.0.7, port: 8080, zone: us-east-1a}}\n  - {{address: 10.0.0.8, port: 8080, zone: us-east-1a, health: {second_health}}}\n{extra}"
    )
}

fn checkout_assignment(held: &xds::Held) -> Option<ClusterLoadAssignment> {
    held.decode(ENDPOINT, "checkout.shop")
}

/// Health of `address` in the client's view of checkout's load assignment.
fn health_of(held: &xds::Held, address: &str) -> Option<i32> {
    let cla = checkout_assignment(held)?;
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .find_map(|e| {
            let text = format!("{:?}", e.host_identifier);
            text.contains(&format!("\"{address}\""))
                .then_some(e.health_status)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_every_node_agree_and_move_without_a_spurious_push() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = start_cluster(root.path(), 3, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    apply(&nodes[0], MESH);

    let a = xds::sotw(
        &nodes[0].grpc,
        xds::node("proxy-a", "us-east-1a"),
        None,
        false,
    )
    .await
    .expect("connect a");
    let b = xds::delta(&nodes[1].grpc, xds::node("proxy-b", "us-east-1a"))
        .await
        .expect("connect b");
    let c = xds::sotw(
        &nodes[2].grpc,
        xds::node("proxy-c", "us-east-1a"),
        None,
        false,
    )
    .await
    .expect("connect c");

    let converged = |want: Option<i32>| {
        let (a, b, c) = (&a, &b, &c);
        move || async move {
            let (ha, hb, hc) = (a.held(), b.held(), c.held());
            let all_types = [CLUSTER, ENDPOINT, LISTENER, ROUTE]
                .iter()
                .all(|t| ha.resources.get(*t).is_some_and(|m| !m.is_empty()));
            let same = ha.contents() == hb.contents() && hb.contents() == hc.contents();
            (all_types && same && health_of(&ha, "10.0.0.8") == want).then_some(())
        }
    };
    eventually(
        WAIT,
        "all three clients to hold the same routes",
        converged(Some(1)),
    )
    .await;

    // Same state, same versions, on every node.
    let (ha, hc) = (a.held(), c.held());
    assert_eq!(
        ha.type_versions, hc.type_versions,
        "versions differ between control-plane nodes"
    );
    let cla = checkout_assignment(&ha).expect("checkout endpoints");
    let zones: Vec<(u32, String)> = cla
        .endpoints
        .iter()
        .map(|l| (l.priority, l.locality.clone().unwrap_or_default().zone))
        .collect();
    assert_eq!(
        zones,
        vec![(0, "us-east-1a".to_string()), (1, "us-west-2a".to_string())]
    );

    // A change reaches every client, delta and state of the world alike.
    apply(&nodes[1], &east_endpoints("unhealthy", ""));
    eventually(
        WAIT,
        "the health change to reach every client",
        converged(Some(2)),
    )
    .await;

    // The admin API lists the three proxies, each on its own control-plane node, with ACKs.
    let listed = cli(&nodes[2].grpc, &["get", "proxies", "-o", "json"], None);
    assert!(listed.ok, "{}", listed.stderr);
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).expect("json");
    let mut seen: Vec<(String, u64)> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|p| {
            (
                p["nodeId"].as_str().unwrap_or_default().to_string(),
                p["controlPlaneNode"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("proxy-a".into(), 1),
            ("proxy-b".into(), 2),
            ("proxy-c".into(), 3)
        ]
    );
    for proxy in listed["items"].as_array().expect("items") {
        assert!(proxy["ackedVersions"]["eds"].is_string(), "{proxy}");
    }

    // proxy-a moves from node 1 to node 3 holding its versions: nothing is resent,
    // and the next change arrives as just that change.
    let before = a.held();
    drop(a);
    let moved = xds::sotw(
        &nodes[2].grpc,
        xds::node("proxy-a", "us-east-1a"),
        Some(before.clone()),
        false,
    )
    .await
    .expect("reconnect");
    eventually(
        WAIT,
        "the moved proxy to be registered on node 3",
        || async {
            let run = cli(&nodes[2].grpc, &["get", "proxies", "-o", "json"], None);
            let value: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
            value["items"]
                .as_array()?
                .iter()
                .any(|p| {
                    p["nodeId"] == "proxy-a"
                        && p["controlPlaneNode"] == 3
                        && p["ackedVersions"]["cds"].is_string()
                })
                .then_some(())
        },
    )
    .await;
    apply(
        &nodes[0],
        &east_endpoints(
            "draining",
            "  - {address: 10.0.0.9, port: 8080, zone: us-east-1a}\n",
        ),
    );
    eventually(WAIT, "the moved proxy to see the new endpoint", || async {
        (health_of(&moved.held(), "10.0.0.9") == Some(1)).then_some(())
    })
    .await;
    let responses = moved.held().responses;
    assert!(
        responses.iter().all(|(t, _)| t == ENDPOINT),
        "the moved proxy was sent more than the endpoint change: {responses:?}"
    );
    assert_eq!(health_of(&moved.held(), "10.0.0.8"), Some(3), "draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_disturb_nobody_else() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = start_cluster(root.path(), 1, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    apply(&nodes[0], MESH);
    let addr = &nodes[0].grpc;

    let good = xds::delta(addr, xds::node("good", "us-east-1a"))
        .await
        .expect("connect");
    // The mesh reaches the xDS server a few milliseconds after the apply
    // (changes are debounced): once the good client holds its clusters, the
    // refusing one's first CDS version is the mesh's, not an empty one.
    eventually(
        WAIT,
        "the good client to hold the mesh's clusters",
        || async { (!good.held().resources.get(CLUSTER)?.is_empty()).then_some(()) },
    )
    .await;
    let refusing = xds::sotw(addr, xds::node("refusing", "us-east-1a"), None, true)
        .await
        .expect("connect");

    // A stream whose first request has no node is refused; one asking for an
    // unknown type gets an empty answer and stays open.
    use envoy_types::pb::envoy::service::discovery::v3::{
        aggregated_discovery_service_client::AggregatedDiscoveryServiceClient, DiscoveryRequest,
    };
    let mut raw = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let no_node = DiscoveryRequest {
        type_url: CLUSTER.into(),
        ..Default::default()
    };
    let mut stream = raw
        .stream_aggregated_resources(tokio_stream::iter(vec![no_node]))
        .await
        .expect("stream opens")
        .into_inner();
    let refused = stream.message().await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: Some(xds::node("curious", "us-east-1a")),
        type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into(),
        resource_names: vec!["nonexistent".into()],
        ..Default::default()
    })
    .await
    .expect("send");
    let mut unknown = raw
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    let answer = unknown
        .message()
        .await
        .expect("answered")
        .expect("a response");
    assert!(answer.resources.is_empty());
    // Asking for ever more types ends that stream, and only that one: a
    // client cannot grow its node's memory without bound.
    tokio::spawn(async move {
        for i in 0..20 {
            let more = DiscoveryRequest {
                type_url: format!("type.googleapis.com/example.Made{i}"),
                ..Default::default()
            };
            if tx.send(more).await.is_err() {
                return;
            }
        }
    });
    let mut ended = None;
    for _ in 0..30 {
        match unknown.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(status) => {
                ended = Some(status.code());
                break;
            }
        }
    }
    assert_eq!(ended, Some(tonic::Code::ResourceExhausted));

    // The refusing client's NACK is recorded, and it is not sent the refused version again.
    eventually(WAIT, "the NACK to be recorded", || async {
        let run = cli(addr, &["get", "proxies", "-o", "json"], None);
        let value: serde_json::Value = serde_json::from_str(&run.stdout).ok()?;
        value["items"]
            .as_array()?
            .iter()
            .any(|p| {
                p["nodeId"] == "refusing"
                    && p["lastNack"]["error"] == "test client refuses clusters"
            })
            .then_some(())
    })
    .await;
    let cds_versions = |held: &xds::Held| -> Vec<String> {
        held.responses
            .iter()
            .filter(|(t, _)| t == CLUSTER)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let refused_so_far = cds_versions(&refusing.held());
    assert_eq!(
        refused_so_far.len(),
        1,
        "a NACKed version was sent again: {refused_so_far:?}"
    );

    // The good client still gets changes; the refusing one gets the new CDS version once.
    apply(&nodes[0], "kind: Service\nmetadata: {name: inventory, namespace: shop}\nspec: {protocol: grpc, port: 9000}\n");
    eventually(WAIT, "the new service to reach the good client", || async {
        good.held()
            .resources
            .get(CLUSTER)?
            .contains_key("inventory.shop")
            .then_some(())
    })
    .await;
    eventually(
        WAIT,
        "the refusing client to be offered the new version",
        || async { (cds_versions(&refusing.held()).len() == 2).then_some(()) },
    )
    .await;
    let versions = cds_versions(&refusing.held());
    assert_ne!(versions[0], versions[1]);
    assert!(good.held().ended.is_none() && refusing.held().ended.is_none());
}

/// Flow control: a client that stops answering is sent at most one
/// response per type, however many changes follow (a slow proxy gets one
/// coalesced update when it answers, never a queue), while a client that
/// answers gets every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_gets_no_queue_of_updates() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = start_cluster(root.path(), 1, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    apply(&nodes[0], MESH);
    apply(&nodes[0], &east_endpoints("healthy", ""));
    let node = xds::node("stuck", "us-east-1a");
    for delta in [false, true] {
        let stuck = match delta {
            true => xds::delta(&nodes[0].grpc, node.clone()).await,
            false => xds::sotw(&nodes[0].grpc, node.clone(), None, false).await,
        }
        .expect("connect");
        let live = xds::delta(&nodes[0].grpc, xds::node("live", "us-east-1a"))
            .await
            .expect("connect");
        let holds_checkout = |client: &xds::AdsClient| {
            client.with(|h| checkout_assignment(h).is_some().then_some(()))
        };
        eventually(WAIT, "both clients hold checkout", || async {
            holds_checkout(&stuck).and(holds_checkout(&live))
        })
        .await;
        stuck.stop_answering();
        let endpoint_responses = |client: &xds::AdsClient| {
            client.with(|h| h.responses.iter().filter(|(t, _)| t == ENDPOINT).count())
        };
        let before = endpoint_responses(&stuck);
        for i in 0..6 {
            let health = if i % 2 == 0 { "unhealthy" } else { "healthy" };
            apply(&nodes[0], &east_endpoints(health, ""));
        }
        // The last change (healthy again, after an unhealthy one) reached
        // the client that answers: every change has been pushed by now.
        let last = format!("10.0.0.{}", 9);
        apply(
            &nodes[0],
            &east_endpoints(
                "healthy",
                &format!("  - {{address: {last}, port: 8080, zone: us-east-1a}}\n"),
            ),
        );
        eventually(
            WAIT,
            "the answering client to get the last change",
            || async { live.with(|h| health_of(h, &last).map(|_| ())) },
        )
        .await;
        let after = endpoint_responses(&stuck);
        assert_eq!(
            after - before,
            1,
            "delta={delta}: a client that does not answer is sent one update per type, not a queue"
        );
    }
}
