//! gRPC through meridian-proxy: a Python grpcio client streams to a Python
//! grpcio server over h2c through the proxy; every message and the trailers
//! arrive intact.

use meridian_tests::{
    agreed_leader, binary, cli, free_port, proxy::ProxyProcess, start_cluster, ServerOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bidirectional_streams_and_trailers_pass_intact() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = start_cluster(root.path(), 1, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let cp = nodes[0].grpc.clone();
    let port = free_port();
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1}}\n---\n\
         kind: Service\nmetadata: {{name: chat, namespace: shop}}\nspec: {{protocol: grpc, port: {port}}}\n"
    );
    assert!(cli(&cp, &["apply", "-f", "-"], Some(&mesh)).ok);
    let mut proxy = ProxyProcess::new(root.path(), "proxy-grpc", "east", &[&cp]);
    proxy.start();

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/interop/grpc_stream_through_proxy.py"
    );
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(binary("meridian"))
        .arg(&cp)
        .arg(format!("127.0.0.1:{port}"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), output)
        .await
        .expect("the script finishes in time")
        .expect("run python3");
    assert!(
        output.status.success(),
        "gRPC through the proxy failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
}
