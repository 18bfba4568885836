//! The Kubernetes source end to end: the real `kube` client in
//! `meridian-agent` against the test API server (list, watch,
//! resourceVersion, bookmarks, 410 Gone). Pods come and go, readiness flips,
//! terminating endpoints drain, a 410 relist loses nothing, the API server
//! goes down and comes back, two clusters aggregate, and an agent restarts.

use meridian_tests::{
    agent::AgentProcess,
    agreed_leader, cli, cluster_status, endpoints_of, eventually,
    kube_api::{objects, FakeKube, Kind},
    start_cluster, ServerNode, ServerOptions,
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn expect(node: &ServerNode, cluster: &str, want: &[&str], what: &str) {
    let want = strings(want);
    eventually(WAIT, what, || {
        let want = want.clone();
        async move { (endpoints_of(node, "shop", "checkout", cluster).await? == want).then_some(()) }
    })
    .await;
}

async fn revision(node: &ServerNode, cluster: &str) -> u64 {
    let run = cli(
        &node.grpc,
        &[
            "get",
            "endpoints",
            "checkout",
            "-n",
            "shop",
            "--cluster",
            cluster,
            "-o",
            "json",
        ],
        None,
    );
    let value: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    value["metadata"]["revision"].as_u64().expect("revision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_endpoints_follow_the_api_server() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = start_cluster(root.path(), 1, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let node = &nodes[0];
    let clusters = "kind: Cluster\nmetadata: {name: k8s-east}\nspec: {region: us-east-1, zone: us-east-1a}\n---\nkind: Cluster\nmetadata: {name: k8s-west}\nspec: {region: us-west-2, zone: us-west-2a}\n";
    assert!(cli(&node.grpc, &["apply", "-f", "-"], Some(clusters)).ok);

    let mut east_api = FakeKube::start().await;
    east_api.put(Kind::Node, objects::node("node-a", "us-east-1b"));
    east_api.put(Kind::Service, objects::service("shop", "checkout", true));
    east_api.put(Kind::Service, objects::service("shop", "internal", false));
    east_api.put(
        Kind::EndpointSlice,
        objects::slice(
            "shop",
            "checkout-1",
            "checkout",
            &[
                ("10.2.0.1", true, false, Some("us-east-1a"), None),
                ("10.2.0.2", true, false, None, Some("node-a")),
            ],
        ),
    );
    east_api.put(
        Kind::EndpointSlice,
        objects::slice(
            "shop",
            "internal-1",
            "internal",
            &[("10.2.9.9", true, false, None, None)],
        ),
    );
    let west_api = FakeKube::start().await;
    west_api.put(Kind::Service, objects::service("shop", "checkout", true));
    west_api.put(
        Kind::EndpointSlice,
        objects::slice(
            "shop",
            "checkout-w",
            "checkout",
            &[("10.3.0.1", true, false, None, None)],
        ),
    );

    let east_config = root.path().join("east.kubeconfig");
    std::fs::write(&east_config, east_api.kubeconfig()).expect("kubeconfig");
    let west_config = root.path().join("west.kubeconfig");
    std::fs::write(&west_config, west_api.kubeconfig()).expect("kubeconfig");
    let kubeconfig_flag = |path: &std::path::Path| path.display().to_string();
    let east_path = kubeconfig_flag(&east_config);
    let west_path = kubeconfig_flag(&west_config);
    let mut east = AgentProcess::new(
        root.path(),
        "agent-k8s-east",
        "k8s-east",
        &[&node.grpc],
        "kubernetes",
        &["--kubeconfig", &east_path, "--context", "fake"],
    );
    let mut west = AgentProcess::new(
        root.path(),
        "agent-k8s-west",
        "k8s-west",
        &[&node.grpc],
        "kubernetes",
        &["--kubeconfig", &west_path],
    );
    east.start();
    west.start();

    // Exported services only; named ports mapped; zones from the slice or the node; two clusters side by side.
    expect(
        node,
        "k8s-east",
        &["10.2.0.1:8080 healthy", "10.2.0.2:8080 healthy"],
        "the first view",
    )
    .await;
    expect(
        node,
        "k8s-west",
        &["10.3.0.1:8080 healthy"],
        "the second cluster",
    )
    .await;
    assert!(
        endpoints_of(node, "shop", "internal", "k8s-east")
            .await
            .is_none(),
        "a service that did not opt in was exported"
    );
    let run = cli(
        &node.grpc,
        &[
            "get",
            "endpoints",
            "checkout",
            "-n",
            "shop",
            "--cluster",
            "k8s-east",
            "-o",
            "json",
        ],
        None,
    );
    let value: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let zones: Vec<&str> = value["spec"]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["zone"].as_str())
        .collect();
    assert_eq!(zones, vec!["us-east-1a", "us-east-1b"]);

    // An endpoint the mesh cannot take (a zone that is no DNS label) is left
    // out and reported; the healthy rest of the batch is taken, and the
    // stream goes on.
    east_api.put(Kind::Service, objects::service("shop", "legacy", true));
    east_api.put(
        Kind::EndpointSlice,
        objects::slice(
            "shop",
            "legacy-1",
            "legacy",
            &[
                ("10.2.5.1", true, false, Some("us-east-1a"), None),
                ("10.2.5.2", true, false, Some("Rack_A"), None),
            ],
        ),
    );
    eventually(WAIT, "legacy's valid endpoint", || async {
        let e = endpoints_of(node, "shop", "legacy", "k8s-east").await?;
        (e == strings(&["10.2.5.1:8080 healthy"])).then_some(())
    })
    .await;
    let status = cluster_status(&node.grpc, "k8s-east").expect("k8s-east");
    assert_eq!(status["invalidEndpoints"], 1, "{status}");
    assert!(
        status["invalidEndpointReason"]
            .as_str()
            .is_some_and(|r| r.contains("shop/legacy") && r.contains("zone")),
        "{status}"
    );
    let (_, metrics) = meridian_tests::http::get(&node.http, "/metrics")
        .await
        .expect("metrics");
    assert!(
        metrics.contains("meridian_cluster_invalid_endpoints{cluster=\"k8s-east\"} 1"),
        "{metrics}"
    );

    // A pod added; a readiness flip; a terminating pod drains; a pod removed.
    let slice = |eps: &[objects::Ep<'_>]| objects::slice("shop", "checkout-1", "checkout", eps);
    east_api.put(
        Kind::EndpointSlice,
        slice(&[
            ("10.2.0.1", true, false, Some("us-east-1a"), None),
            ("10.2.0.2", true, false, None, Some("node-a")),
            ("10.2.0.3", true, false, None, None),
        ]),
    );
    expect(
        node,
        "k8s-east",
        &[
            "10.2.0.1:8080 healthy",
            "10.2.0.2:8080 healthy",
            "10.2.0.3:8080 healthy",
        ],
        "a pod added",
    )
    .await;
    east_api.put(
        Kind::EndpointSlice,
        slice(&[
            ("10.2.0.1", false, false, Some("us-east-1a"), None),
            ("10.2.0.2", false, true, None, Some("node-a")),
            ("10.2.0.3", true, false, None, None),
        ]),
    );
    expect(
        node,
        "k8s-east",
        &[
            "10.2.0.1:8080 unhealthy",
            "10.2.0.2:8080 draining",
            "10.2.0.3:8080 healthy",
        ],
        "readiness flip and drain",
    )
    .await;
    east_api.put(
        Kind::EndpointSlice,
        slice(&[
            ("10.2.0.1", true, false, Some("us-east-1a"), None),
            ("10.2.0.3", true, false, None, None),
        ]),
    );
    expect(
        node,
        "k8s-east",
        &["10.2.0.1:8080 healthy", "10.2.0.3:8080 healthy"],
        "a pod removed",
    )
    .await;

    // History compacted and every watch dropped: resuming gets 410, the agent
    // relists, nothing is lost or rewritten, and later changes still arrive.
    let before = revision(node, "k8s-east").await;
    east_api.compact();
    east_api.drop_watches();
    eventually(WAIT, "a watch to be told 410 Gone", || async {
        (east_api.gone_count() > 0).then_some(())
    })
    .await;
    east_api.put(
        Kind::EndpointSlice,
        slice(&[
            ("10.2.0.1", true, false, Some("us-east-1a"), None),
            ("10.2.0.4", true, false, None, None),
        ]),
    );
    expect(
        node,
        "k8s-east",
        &["10.2.0.1:8080 healthy", "10.2.0.4:8080 healthy"],
        "a change after the relist",
    )
    .await;
    assert!(revision(node, "k8s-east").await > before);

    // The API server down for a while: endpoints kept, the error shown; back: reconciled.
    east_api.down().await;
    eventually(WAIT, "the outage to be reported", || async {
        cluster_status(&node.grpc, "k8s-east")?["sourceError"]
            .is_string()
            .then_some(())
    })
    .await;
    expect(
        node,
        "k8s-east",
        &["10.2.0.1:8080 healthy", "10.2.0.4:8080 healthy"],
        "endpoints kept during the outage",
    )
    .await;
    east_api.put(
        Kind::EndpointSlice,
        slice(&[("10.2.0.5", true, false, None, None)]),
    );
    east_api.up().await;
    expect(
        node,
        "k8s-east",
        &["10.2.0.5:8080 healthy"],
        "reconciled after the outage",
    )
    .await;
    eventually(WAIT, "the error to clear", || async {
        cluster_status(&node.grpc, "k8s-east")?["sourceError"]
            .is_null()
            .then_some(())
    })
    .await;

    // The agent killed; a change meanwhile; restarted, it resynchronises.
    east.kill();
    east_api.put(
        Kind::EndpointSlice,
        slice(&[
            ("10.2.0.5", true, false, None, None),
            ("10.2.0.6", true, false, None, None),
        ]),
    );
    east_api.delete(Kind::Service, "shop", "checkout");
    east.start();
    eventually(
        WAIT,
        "the unexported service to be removed after the restart",
        || async {
            endpoints_of(node, "shop", "checkout", "k8s-east")
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    expect(
        node,
        "k8s-west",
        &["10.3.0.1:8080 healthy"],
        "the other cluster untouched",
    )
    .await;
    drop(west);
}
