//! A stock proxyless gRPC client (Python grpcio, xDS bootstrap) consumes
//! Meridian's ADS stream: weighted splits and priority failover, against real
//! gRPC servers. The Python side is tests/interop/grpc_xds_client.py.

use meridian_tests::{agreed_leader, binary, start_cluster, ServerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpc_client_follows_splits_and_failover() {
    let has_grpc = std::process::Command::new("python3")
        .args(["-c", "import grpc"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_grpc,
        "Python grpcio is missing: scripts/setup installs it"
    );

    let root = tempfile::tempdir().expect("temp dir");
    let nodes = start_cluster(root.path(), 1, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let bootstrap = root.path().join("xds-bootstrap.json");
    let config = serde_json::json!({
        "xds_servers": [{
            "server_uri": nodes[0].grpc,
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {
            "id": "python-grpc-client",
            "cluster": "us-east-1a",
            "locality": {"region": "us-east-1", "zone": "us-east-1a"},
        },
    });
    std::fs::write(&bootstrap, config.to_string()).expect("write bootstrap");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/interop/grpc_xds_client.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(binary("meridian"))
        .arg(&nodes[0].grpc)
        .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(240), output)
        .await
        .expect("the interop client finishes in time")
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "interop client failed:\n{stderr}\n{stdout}"
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("summary JSON");
    println!("grpc interop: {summary}");
    let share = summary["v2_share"].as_f64().expect("v2 share");
    assert!((0.68..=0.82).contains(&share), "{summary}");
}
