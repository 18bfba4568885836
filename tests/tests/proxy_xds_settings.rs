//! Settings a control plane sends in xDS that meridian-proxy must honour,
//! checked against a scripted xDS server that sends what a test chooses.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::google::protobuf::{Any, Duration as ProtoDuration};
use meridian_routes::type_url;
use meridian_tests::{
    eventually,
    fake_xds::FakeXds,
    free_port, http, proxy,
    upstream::{Blackhole, Upstream},
};
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
    // api.shop, on the same port (so in the same route configuration),
    // answers: once it does, the proxy holds web.shop's route too.
    let api = Upstream::start("api").await;
    let port = free_port();
    let manifests = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: r}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}, timeout: 10s}}\n---\n\
         kind: Endpoints\nmetadata: {{name: web, namespace: shop, cluster: east}}\nspec: {{endpoints: [{{address: 127.0.0.1, port: {}}}]}}\n---\n\
         kind: Service\nmetadata: {{name: api, namespace: shop}}\nspec: {{protocol: http, port: {port}}}\n---\n\
         kind: Endpoints\nmetadata: {{name: api, namespace: shop, cluster: east}}\nspec: {{endpoints: [{{address: 127.0.0.1, port: {}}}]}}\n",
        hole.port, api.port
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
    // The 150 ms was set before the proxy started: every configuration it
    // holds has it.
    let client = proxy::client();
    let addr = format!("127.0.0.1:{port}");
    eventually(WAIT, "the proxy to route the port's services", || async {
        let (status, _) = proxy::get(&client, &addr, "api.shop", "/").await?;
        let (_, hosts) = http::get(&proxy.admin, "/clusters").await?;
        (status == 200 && hosts.contains(&format!("127.0.0.1:{}", hole.port))).then_some(())
    })
    .await;

    let started = Instant::now();
    let answer = proxy::get(&client, &addr, "web.shop", "/").await;
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
