//! meridian-proxy refuses xDS updates it cannot apply: a route to a cluster
//! that does not exist, a resource that does not decode. It NACKs them with
//! the reason and keeps serving its previous routes.

use envoy_types::pb::{
    envoy::config::route::v3::{route::Action, route_action::ClusterSpecifier, RouteConfiguration},
    google::protobuf::Any,
};
use meridian_routes::type_url;
use meridian_tests::{
    eventually, fake_xds::FakeXds, free_port, http, proxy::ProxyProcess, upstream::Upstream,
};
use prost::Message;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_and_malformed_updates_are_nacked_and_old_routes_serve() {
    nacks_keep_old_routes(FakeXds::start().await).await;
}

/// The same against a server that offers only state of the world: the proxy
/// falls back to it, and NACKs there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_of_the_world_server_is_used_and_nacked_alike() {
    nacks_keep_old_routes(FakeXds::start_sotw_only().await).await;
}

async fn nacks_keep_old_routes(xds: FakeXds) {
    let root = tempfile::tempdir().expect("temp dir");
    let upstream = Upstream::start("up").await;
    let port = free_port();
    let manifests = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: r}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}}}\n---\n\
         kind: Endpoints\nmetadata: {{name: web, namespace: shop, cluster: east}}\nspec: {{endpoints: [{{address: 127.0.0.1, port: {}}}]}}\n",
        upstream.port
    );
    let compiled = xds.set_compiled(&manifests, "east");
    let mut proxy = ProxyProcess::new(root.path(), "proxy-nack", "east", &[&xds.addr]);
    proxy.start();
    let addr = format!("127.0.0.1:{port}");
    eventually(WAIT, "the proxy to route web.shop", || async {
        let (status, _) = http::get_host(&addr, "web.shop", "/").await?;
        (status == 200).then_some(())
    })
    .await;

    // A route configuration that sends traffic to a cluster nobody defined.
    let outbound = format!("outbound_{port}");
    let mut routes = RouteConfiguration::decode(
        compiled
            .get(type_url::ROUTE, &outbound)
            .expect("routes")
            .resource
            .value
            .as_slice(),
    )
    .expect("decodes");
    for route in routes
        .virtual_hosts
        .iter_mut()
        .flat_map(|v| v.routes.iter_mut())
    {
        if let Some(Action::Route(action)) = &mut route.action {
            action.cluster_specifier = Some(ClusterSpecifier::Cluster("ghost.shop".into()));
        }
    }
    xds.set(
        type_url::ROUTE,
        &outbound,
        Any {
            type_url: type_url::ROUTE.into(),
            value: routes.encode_to_vec(),
        },
    );
    eventually(WAIT, "a NACK naming the unknown cluster", || async {
        xds.nacks()
            .iter()
            .any(|e| e.contains("unknown cluster ghost.shop"))
            .then_some(())
    })
    .await;
    assert_eq!(
        http::get_host(&addr, "web.shop", "/").await,
        Some((200, "up".into())),
        "the old routes keep serving"
    );

    // A cluster whose bytes are not a Cluster at all.
    xds.set(
        type_url::CLUSTER,
        "web.shop",
        Any {
            type_url: type_url::CLUSTER.into(),
            value: vec![0xff, 0xff, 0xff],
        },
    );
    eventually(WAIT, "a NACK for the malformed cluster", || async {
        xds.nacks()
            .iter()
            .any(|e| e.contains("does not decode"))
            .then_some(())
    })
    .await;
    assert_eq!(
        http::get_host(&addr, "web.shop", "/").await,
        Some((200, "up".into())),
        "the old routes keep serving"
    );
    let (code, _) = http::get(&proxy.admin, "/ready").await.expect("admin");
    assert_eq!(code, 200);
}
