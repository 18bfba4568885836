//! Settings a control plane sends in xDS that meridian-proxy must honour,
//! checked against a scripted xDS server that sends what a test chooses.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::google::protobuf::{Any, Duration as ProtoDuration};
use meridian_routes::type_url;
use meridian_tests::{eventually, fake_xds::FakeXds, free_port, http, proxy, upstream::Blackhole};
use prost::Message;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// A cluster's `connect_timeout` bounds connecting to its hosts: a host
/// gone from the network fails the request after it, not after a fixed
/// time of the proxy's own (2 s before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clusters_connect_timeout_is_honoured() {
    let xds = FakeXds::start().await;
    let root = tempfile::tempdir().expect("temp dir");
    let hole = Blackhole::start().await;
    let port = free_port();
    let manifests = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: r}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}, timeout: 10s}}\n---\n\
         kind: Endpoints\nmetadata: {{name: web, namespace: shop, cluster: east}}\nspec: {{endpoints: [{{address: 127.0.0.1, port: {}}}]}}\n",
        hole.port
    );
    let compiled = xds.set_compiled(&manifests, "east");
    let mut cluster = Cluster::decode(
        compiled
            .get(type_url::CLUSTER, "web.shop")
            .expect("the cluster")
            .resource
            .value
            .as_slice(),
    )
    .expect("decodes");
    cluster.connect_timeout = Some(ProtoDuration {
        seconds: 0,
        nanos: 150_000_000,
    });
    xds.set(
        type_url::CLUSTER,
        "web.shop",
        Any {
            type_url: type_url::CLUSTER.into(),
            value: cluster.encode_to_vec(),
        },
    );
    let mut proxy = proxy::ProxyProcess::new(root.path(), "proxy-connect", "east", &[&xds.addr]);
    proxy.start();
    // Ready once it holds a configuration: the one with the 150 ms, set
    // before it started.
    eventually(WAIT, "the proxy's configuration", || async {
        let (status, _) = http::get(&proxy.admin, "/ready").await?;
        (status == 200).then_some(())
    })
    .await;

    let client = proxy::client();
    let started = Instant::now();
    let answer = proxy::get(&client, &format!("127.0.0.1:{port}"), "web.shop", "/").await;
    let took = started.elapsed();
    let status = answer.map(|(status, _)| status);
    assert!(
        matches!(status, Some(502 | 503)),
        "the only host cannot be reached: {status:?}"
    );
    // The route allows 10 s; the proxy's old fixed connect timeout was 2 s.
    assert!(
        took < Duration::from_millis(1_500),
        "the request failed after {took:?}, not after the cluster's 150 ms connect timeout"
    );
    proxy.kill();
}
