//! Service-to-service transport settings as the routes deliver them: mutual
//! TLS to the proxies in front of a cluster's endpoints, and the member
//! clusters whose proxies the service admits (and whom that admits). Pure.

use crate::config::ClusterConfig;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
    UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::value::Kind;
use meridian_identity::spiffe::{Identity, SpiffeId};
use meridian_identity::tls::PeerIdentity;
use meridian_proto::xds::{ALLOWED_CLUSTERS, METADATA_NAMESPACE, TLS_TRANSPORT_SOCKET};
use prost::Message;
use serde::Serialize;

/// Mutual TLS to the cluster's endpoints, whose certificates must name a
/// SPIFFE ID starting with `server_prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeshTls {
    pub server_prefix: String,
}

/// The cluster's mutual TLS settings, if it has a transport socket; an error
/// for one this proxy cannot honour (it is NACKed, never ignored).
pub fn mesh_tls(cluster: &Cluster) -> Result<Option<MeshTls>, String> {
    let Some(socket) = &cluster.transport_socket else {
        return Ok(None);
    };
    if socket.name != TLS_TRANSPORT_SOCKET {
        return Err(format!("unsupported transport socket '{}'", socket.name));
    }
    let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
        return Err("the TLS transport socket has no configuration".into());
    };
    let context = UpstreamTlsContext::decode(any.value.as_slice())
        .map_err(|e| format!("the TLS transport socket's UpstreamTlsContext: {e}"))?;
    let matchers = match context
        .common_tls_context
        .and_then(|c| c.validation_context_type)
    {
        Some(ValidationContextType::ValidationContext(v)) => v.match_typed_subject_alt_names,
        _ => Vec::new(),
    };
    let prefix = matchers.iter().find_map(|m| match &m.matcher {
        Some(s) if m.san_type == SanType::Uri as i32 => match &s.match_pattern {
            Some(MatchPattern::Prefix(p)) if p.starts_with("spiffe://") => Some(p.clone()),
            _ => None,
        },
        _ => None,
    });
    match prefix {
        Some(server_prefix) => Ok(Some(MeshTls { server_prefix })),
        None => Err("the TLS transport socket names no spiffe:// URI SAN prefix to verify".into()),
    }
}

/// The caller, if it is a mesh proxy of a cluster the service admits.
pub fn admit(peer: &PeerIdentity, service: Option<&ClusterConfig>) -> Result<SpiffeId, String> {
    let id = match peer {
        PeerIdentity::Verified(id) => id,
        PeerIdentity::Unverified(reason) => return Err(format!("mutual TLS required: {reason}")),
        PeerIdentity::Plaintext => return Err("mutual TLS required".into()),
    };
    let Identity::Proxy { cluster, .. } = &id.identity else {
        return Err(format!("{id} is not a mesh proxy"));
    };
    let Some(service) = service else {
        return Err("this proxy has no routes for the service yet".into());
    };
    match &service.allowed_clusters {
        Some(allowed) if !allowed.contains(cluster) => Err(format!(
            "proxies of cluster '{cluster}' may not call this service"
        )),
        _ => Ok(id.clone()),
    }
}

/// The member clusters admitted by the service, if it restricts them.
pub fn allowed_clusters(cluster: &Cluster) -> Option<Vec<String>> {
    let fields = &cluster
        .metadata
        .as_ref()?
        .filter_metadata
        .get(METADATA_NAMESPACE)?
        .fields;
    match fields.get(ALLOWED_CLUSTERS)?.kind.as_ref()? {
        Kind::ListValue(list) => Some(
            list.values
                .iter()
                .filter_map(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        ),
        _ => Some(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::TransportSocket;
    use meridian_model::spec::ServiceSpec;

    fn proxy_of(cluster: &str) -> PeerIdentity {
        PeerIdentity::Verified(
            SpiffeId::new(
                "mesh.test",
                Identity::Proxy {
                    cluster: cluster.into(),
                    id: "p".into(),
                },
            )
            .expect("id"),
        )
    }

    fn spec(yaml: &str) -> ServiceSpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    #[test]
    fn reads_back_what_the_routes_compile() {
        let service =
            spec("{protocol: http, port: 80, allowedClusters: [east], transport: {mtls: true}}");
        let cluster = Cluster {
            transport_socket: Some(meridian_routes::transport::mesh_tls(Some("mesh.test"))),
            metadata: meridian_routes::transport::metadata(&service),
            ..Default::default()
        };
        assert_eq!(
            mesh_tls(&cluster),
            Ok(Some(MeshTls {
                server_prefix: "spiffe://mesh.test/cluster/".into()
            }))
        );
        assert_eq!(allowed_clusters(&cluster), Some(vec!["east".to_string()]));
        assert_eq!(mesh_tls(&Cluster::default()), Ok(None));
        assert_eq!(allowed_clusters(&Cluster::default()), None);
    }

    #[test]
    fn transport_sockets_it_cannot_honour_are_errors() {
        let cluster = Cluster {
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".into(),
                config_type: None,
            }),
            ..Default::default()
        };
        assert!(mesh_tls(&cluster).is_err());
    }

    #[test]
    fn admits_only_proxies_of_allowed_clusters() {
        let snapshot = crate::config::test_cluster(Some(vec!["east".into()]));
        assert!(admit(&proxy_of("east"), Some(&snapshot)).is_ok());
        let refused = admit(&proxy_of("north"), Some(&snapshot)).expect_err("north");
        assert!(refused.contains("north"), "{refused}");
        assert!(admit(
            &PeerIdentity::Unverified("no client certificate".into()),
            Some(&snapshot)
        )
        .is_err());
        assert!(admit(&proxy_of("east"), None).is_err());
        let agent = PeerIdentity::Verified(
            SpiffeId::new(
                "mesh.test",
                Identity::Agent {
                    cluster: "east".into(),
                },
            )
            .expect("id"),
        );
        assert!(admit(&agent, Some(&snapshot)).is_err());
    }
}
