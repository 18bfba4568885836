//! How proxies carry a service's traffic between them: mutual TLS with their
//! mesh certificates (an `UpstreamTlsContext` whose SAN matcher names the
//! mesh's proxies), and which member clusters the service admits, carried in
//! the cluster's metadata for the proxies that terminate it.

use crate::proto;
use envoy_types::pb::envoy::config::core::v3::{
    transport_socket::ConfigType, Metadata, TransportSocket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, subject_alt_name_matcher::SanType,
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value};
use meridian_model::spec::ServiceSpec;

pub use meridian_proto::xds::{ALLOWED_CLUSTERS, METADATA_NAMESPACE, TLS_TRANSPORT_SOCKET};

/// Mutual TLS to the proxies of `trust_domain`: the server's certificate
/// must name `spiffe://TRUST_DOMAIN/cluster/...`. A plaintext control plane
/// knows no trust domain; its proxies have no certificates and refuse the
/// service rather than send it in plaintext.
pub fn mesh_tls(trust_domain: Option<&str>) -> TransportSocket {
    let prefix = match trust_domain {
        Some(domain) => format!("spiffe://{domain}/cluster/"),
        None => "spiffe://".to_string(),
    };
    let context = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                        san_type: SanType::Uri as i32,
                        matcher: Some(StringMatcher {
                            match_pattern: Some(MatchPattern::Prefix(prefix)),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.into(),
        config_type: Some(ConfigType::TypedConfig(proto::any(&context))),
    }
}

/// `meridian.io: {allowedClusters: [...]}` when the service restricts them.
pub fn metadata(spec: &ServiceSpec) -> Option<Metadata> {
    let allowed = spec.allowed_clusters.as_ref()?;
    let list = ListValue {
        values: allowed
            .iter()
            .map(|c| Value {
                kind: Some(Kind::StringValue(c.clone())),
            })
            .collect(),
    };
    let fields = [(
        ALLOWED_CLUSTERS.to_string(),
        Value {
            kind: Some(Kind::ListValue(list)),
        },
    )]
    .into_iter()
    .collect();
    Some(Metadata {
        filter_metadata: [(METADATA_NAMESPACE.to_string(), Struct { fields })]
            .into_iter()
            .collect(),
        ..Default::default()
    })
}
