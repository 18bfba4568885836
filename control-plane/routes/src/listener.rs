//! LDS: api listeners for proxyless gRPC clients (`NAME.NAMESPACE` and
//! `NAME.NAMESPACE:PORT`), and the outbound listeners a proxy binds.

use crate::{names, proto, ServiceId};
use envoy_types::pb::envoy::{
    config::listener::v3::{filter, ApiListener, Filter, FilterChain, Listener},
    extensions::filters::{
        http::router::v3::Router,
        network::{
            http_connection_manager::v3::{
                http_connection_manager::{CodecType, RouteSpecifier},
                http_filter, HttpConnectionManager, HttpFilter, Rds,
            },
            tcp_proxy::v3::{tcp_proxy, TcpProxy},
        },
    },
};

/// The address outbound listeners bind by default; proxies may override it.
pub const OUTBOUND_BIND: &str = "127.0.0.1";

fn connection_manager(stat_prefix: &str, route_config_name: &str) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(proto::ads()),
            route_config_name: route_config_name.to_string(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(proto::any(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An api listener: what `xds:///NAME.NAMESPACE` resolves to in a gRPC client.
pub fn api_listener(name: String, id: &ServiceId) -> Listener {
    let route_config = names::service(id);
    Listener {
        api_listener: Some(ApiListener {
            api_listener: Some(proto::any(&connection_manager(&name, &route_config))),
        }),
        name,
        ..Default::default()
    }
}

/// An outbound HTTP listener on `port`, routing by authority with the port's route configuration.
pub fn outbound_http(port: u16) -> Listener {
    let name = names::outbound(port);
    let hcm = connection_manager(&name, &name);
    outbound(
        port,
        name,
        "envoy.filters.network.http_connection_manager",
        proto::any(&hcm),
    )
}

/// An outbound TCP listener on `port`, proxying to one service's cluster.
pub fn outbound_tcp(port: u16, id: &ServiceId) -> Listener {
    let name = names::outbound(port);
    let tcp = TcpProxy {
        stat_prefix: name.clone(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(names::service(id))),
        ..Default::default()
    };
    outbound(
        port,
        name,
        "envoy.filters.network.tcp_proxy",
        proto::any(&tcp),
    )
}

fn outbound(
    port: u16,
    name: String,
    filter_name: &str,
    config: envoy_types::pb::google::protobuf::Any,
) -> Listener {
    Listener {
        name,
        address: Some(proto::socket_address(OUTBOUND_BIND, port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: filter_name.to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(config)),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}
