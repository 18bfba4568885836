//! How Meridian names xDS resources. Proxyless gRPC clients dial
//! `xds:///NAME.NAMESPACE`, so a service's listener, route configuration,
//! cluster and load assignment are all named `NAME.NAMESPACE`.

use crate::ServiceId;

/// `NAME.NAMESPACE`: the service's cluster, load assignment, route configuration and api listener.
pub fn service(id: &ServiceId) -> String {
    format!("{}.{}", id.name, id.namespace)
}

/// `NAME.NAMESPACE:PORT`: the api listener for targets that carry the port.
pub fn service_with_port(id: &ServiceId, port: u16) -> String {
    format!("{}.{}:{port}", id.name, id.namespace)
}

/// The outbound listener (and its route configuration) a proxy binds on a port.
pub fn outbound(port: u16) -> String {
    format!("outbound_{port}")
}

/// Host names a request may carry for the service, with and without the port.
pub fn domains(id: &ServiceId, port: u16) -> Vec<String> {
    let base = [
        format!("{}.{}", id.name, id.namespace),
        format!("{}.{}.svc", id.name, id.namespace),
        format!("{}.{}.svc.cluster.local", id.name, id.namespace),
    ];
    base.iter()
        .flat_map(|host| [host.clone(), format!("{host}:{port}")])
        .collect()
}
