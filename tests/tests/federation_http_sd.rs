//! An agent with an HTTP service-discovery source: changes arrive, ETags
//! spare unchanged bodies, malformed content and an unreachable server keep
//! the last good view and report the error.

use meridian_tests::{
    agent::AgentProcess, agreed_leader, cli, cluster_status, endpoints_of, eventually, http,
    http_sd::HttpSdServer, start_cluster, ServerOptions,
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn targets(addresses: &[&str]) -> String {
    let targets: Vec<String> = addresses.iter().map(|a| format!("\"{a}:9000\"")).collect();
    format!(
        r#"[{{"targets": [{}], "labels": {{"service": "inventory", "namespace": "shop", "zone": "vm-a"}}}}]"#,
        targets.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sd_changes_errors_and_outages() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = start_cluster(root.path(), 1, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let node = &nodes[0];
    assert!(
        cli(
            &node.grpc,
            &["apply", "-f", "-"],
            Some("kind: Cluster\nmetadata: {name: vms}\nspec: {region: on-prem}\n")
        )
        .ok
    );

    let mut server = HttpSdServer::start(&targets(&["10.9.0.1", "10.9.0.2"])).await;
    let mut agent = AgentProcess::new(
        root.path(),
        "agent-vms",
        "vms",
        &[&node.grpc],
        &format!("http-sd:{}", server.url()),
        &[],
    );
    agent.start();
    let expect = |addresses: &'static [&'static str]| {
        let want: Vec<String> = addresses
            .iter()
            .map(|a| format!("{a}:9000 healthy"))
            .collect();
        move || {
            let want = want.clone();
            async move { (endpoints_of(node, "shop", "inventory", "vms").await? == want).then_some(()) }
        }
    };
    eventually(WAIT, "the first view", expect(&["10.9.0.1", "10.9.0.2"])).await;
    eventually(WAIT, "a 304 for an unchanged body", || async {
        (server.not_modified() > 0).then_some(())
    })
    .await;

    server.set(&targets(&["10.9.0.2", "10.9.0.3"]));
    eventually(WAIT, "the change", expect(&["10.9.0.2", "10.9.0.3"])).await;

    server.set("[{\"targets\": [\"10.9.0.4:9000\"]}]");
    eventually(WAIT, "the malformed body to be reported", || async {
        cluster_status(&node.grpc, "vms")?["sourceError"]
            .as_str()?
            .contains("service")
            .then_some(())
    })
    .await;
    eventually(
        WAIT,
        "the last good view to stay",
        expect(&["10.9.0.2", "10.9.0.3"]),
    )
    .await;
    let (_, metrics) = http::get(&node.http, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains("meridian_cluster_source_error{cluster=\"vms\"} 1"),
        "{metrics}"
    );

    server.down().await;
    eventually(WAIT, "the outage to be reported", || async {
        let error = cluster_status(&node.grpc, "vms")?["sourceError"]
            .as_str()?
            .to_string();
        (!error.contains("service")).then_some(())
    })
    .await;
    eventually(
        WAIT,
        "the last good view to stay",
        expect(&["10.9.0.2", "10.9.0.3"]),
    )
    .await;

    server.set(&targets(&["10.9.0.5"]));
    server.up().await;
    eventually(WAIT, "recovery", expect(&["10.9.0.5"])).await;
    eventually(WAIT, "the error to clear", || async {
        cluster_status(&node.grpc, "vms")?["sourceError"]
            .is_null()
            .then_some(())
    })
    .await;
}
