//! Agents with static-file sources against a three-node control plane:
//! changes flow through, malformed files keep the last good view, a gone
//! agent marks its cluster stale without emptying it, two clusters aggregate,
//! and a leader killed while agents stream loses no change.

use meridian_tests::{
    agent::{write_endpoint_file, AgentProcess},
    agreed_leader, cli, cluster_status, endpoints_of, eventually, start_cluster, ServerOptions,
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn set(service: &str, endpoints: &[(&str, &str)]) -> String {
    let items: Vec<String> = endpoints
        .iter()
        .map(|(addr, health)| format!("{{address: {addr}, port: 8080, health: {health}}}"))
        .collect();
    format!(
        "- service: {service}\n  endpoints: [{}]\n",
        items.join(", ")
    )
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_agents_sync_go_stale_and_survive_a_leader_kill() {
    let root = tempfile::tempdir().expect("temp dir");
    let options = ServerOptions {
        extra_args: vec!["--agent-grace-period".into(), "2s".into()],
        ..ServerOptions::default()
    };
    let mut nodes = start_cluster(root.path(), 3, options);
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let clusters = "kind: Cluster\nmetadata: {name: east}\nspec: {region: us-east-1, zone: us-east-1a}\n---\nkind: Cluster\nmetadata: {name: west}\nspec: {region: us-west-2, zone: us-west-2a}\n";
    assert!(cli(&nodes[0].grpc, &["apply", "-f", "-"], Some(clusters)).ok);

    let addrs: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let east_file = root.path().join("east.yaml");
    let west_file = root.path().join("west.yaml");
    write_endpoint_file(
        &east_file,
        &(set(
            "shop/checkout",
            &[("10.0.0.1", "healthy"), ("10.0.0.2", "healthy")],
        ) + &set("shop/cart", &[("10.0.0.9", "healthy")])),
    );
    write_endpoint_file(
        &west_file,
        &set("shop/checkout", &[("10.1.0.1", "healthy")]),
    );
    let mut east = AgentProcess::new(
        root.path(),
        "agent-east",
        "east",
        &addr_refs,
        &format!("file:{}", east_file.display()),
        &[],
    );
    let mut west = AgentProcess::new(
        root.path(),
        "agent-west",
        "west",
        &addr_refs[1..],
        &format!("file:{}", west_file.display()),
        &[],
    );
    east.start();
    west.start();

    // Two clusters' endpoints for the same service, side by side.
    let node = &nodes[2];
    eventually(WAIT, "both clusters' endpoints", || async {
        let e = endpoints_of(node, "shop", "checkout", "east").await?;
        let w = endpoints_of(node, "shop", "checkout", "west").await?;
        (e.len() == 2 && w.len() == 1).then_some(())
    })
    .await;

    // Added, removed, a readiness flip, a draining endpoint; a removed service.
    write_endpoint_file(
        &east_file,
        &set(
            "shop/checkout",
            &[("10.0.0.2", "unhealthy"), ("10.0.0.3", "draining")],
        ),
    );
    eventually(WAIT, "the file change", || async {
        let e = endpoints_of(node, "shop", "checkout", "east").await?;
        (e == strings(&["10.0.0.2:8080 unhealthy", "10.0.0.3:8080 draining"])).then_some(())
    })
    .await;
    eventually(WAIT, "the removed service to go", || async {
        endpoints_of(node, "shop", "cart", "east")
            .await
            .is_none()
            .then_some(())
    })
    .await;

    // A malformed file: the last good view stays and the error shows on the cluster.
    write_endpoint_file(
        &east_file,
        "- service: shop/checkout\n  endpoints: [{address: not-an-ip, port: 8080}]\n",
    );
    eventually(WAIT, "the source error to show", || async {
        let status = cluster_status(&node.grpc, "east")?;
        status["sourceError"]
            .as_str()?
            .contains("not-an-ip")
            .then_some(())
    })
    .await;
    assert_eq!(
        endpoints_of(node, "shop", "checkout", "east").await,
        Some(strings(&[
            "10.0.0.2:8080 unhealthy",
            "10.0.0.3:8080 draining"
        ]))
    );
    write_endpoint_file(
        &east_file,
        &set(
            "shop/checkout",
            &[("10.0.0.2", "healthy"), ("10.0.0.3", "draining")],
        ),
    );
    eventually(WAIT, "the error to clear", || async {
        let status = cluster_status(&node.grpc, "east")?;
        (status["sourceError"].is_null()
            && endpoints_of(node, "shop", "checkout", "east")
                .await?
                .contains(&"10.0.0.2:8080 healthy".to_string()))
        .then_some(())
    })
    .await;

    // The agent gone past the grace period: stale, endpoints kept; back: fresh.
    west.kill();
    eventually(WAIT, "west to be marked stale", || async {
        (cluster_status(&node.grpc, "west")?["stale"] == true).then_some(())
    })
    .await;
    assert_eq!(
        endpoints_of(node, "shop", "checkout", "west").await,
        Some(strings(&["10.1.0.1:8080 healthy"]))
    );
    let listed = cli(
        &node.grpc,
        &["get", "endpoints", "-o", "json", "--consistency", "stale"],
        None,
    );
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).expect("json");
    let west_set = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|e| e["metadata"]["cluster"] == "west")
        .expect("west endpoints listed");
    assert_eq!(west_set["status"]["stale"], true);
    let table = cli(
        &node.grpc,
        &["get", "clusters", "--consistency", "stale"],
        None,
    );
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("west") && l.contains("stale")),
        "{}",
        table.stdout
    );
    west.start();
    eventually(WAIT, "west to be fresh again", || async {
        (cluster_status(&node.grpc, "west")?["stale"] == false).then_some(())
    })
    .await;

    // Kill the leader while agents stream; a change made meanwhile is not lost.
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    nodes
        .iter_mut()
        .find(|n| n.id == leader)
        .expect("leader")
        .kill();
    write_endpoint_file(
        &east_file,
        &set(
            "shop/checkout",
            &[("10.0.0.2", "healthy"), ("10.0.0.4", "healthy")],
        ),
    );
    let survivor = nodes.iter().find(|n| n.is_running()).expect("a survivor");
    eventually(WAIT, "the change made during the election", || async {
        let e = endpoints_of(survivor, "shop", "checkout", "east").await?;
        (e == strings(&["10.0.0.2:8080 healthy", "10.0.0.4:8080 healthy"])).then_some(())
    })
    .await;
    // The agents reconnected; nobody went stale.
    assert_eq!(
        cluster_status(&survivor.grpc, "east").expect("east")["stale"],
        false
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_source_feeds_its_own_node() {
    let root = tempfile::tempdir().expect("temp dir");
    let file = root.path().join("lab.yaml");
    write_endpoint_file(&file, &set("lab/printer", &[("10.7.0.1", "healthy")]));
    let options = ServerOptions {
        extra_args: vec![
            "--source".into(),
            format!("file:{}", file.display()),
            "--source-cluster".into(),
            "lab".into(),
        ],
        ..ServerOptions::default()
    };
    let nodes = start_cluster(root.path(), 1, options);
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let node = &nodes[0];
    // The source waits (with backoff) until its cluster is registered.
    assert!(
        cli(
            &node.grpc,
            &["apply", "-f", "-"],
            Some("kind: Cluster\nmetadata: {name: lab}\nspec: {region: home}\n")
        )
        .ok
    );
    eventually(WAIT, "the in-process source's endpoints", || async {
        (endpoints_of(node, "lab", "printer", "lab").await? == strings(&["10.7.0.1:8080 healthy"]))
            .then_some(())
    })
    .await;
}
