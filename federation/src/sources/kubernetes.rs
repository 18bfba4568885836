//! Kubernetes source: reflector stores of `v1` Services, `discovery.k8s.io/v1`
//! EndpointSlices and `v1` Nodes, watched with the `kube` client, turned into
//! endpoint sets for the Services that opt in.
//!
//! A Service opts in with the label or annotation `meridian.io/export: "true"`.
//! An endpoint is healthy when ready, draining when terminating, unhealthy
//! otherwise; its zone comes from the slice, or from its node's
//! `topology.kubernetes.io/zone` label. The Service's first port, by name,
//! selects the slice port (so named target ports map to numbers).
//! Watches restart with backoff; after a `410 Gone` the watcher relists while
//! the stores keep what they knew.

use super::{send_if_new, Source, SourceUpdate};
use crate::{view::normalise, ServiceName, View};
use futures::{future::BoxFuture, stream, StreamExt};
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{reflector, watcher, WatchStreamExt},
    Api, Client, Config, ResourceExt,
};
use meridian_model::spec::{Endpoint, Health};
use std::{collections::BTreeMap, path::PathBuf, sync::Arc};
use tokio::sync::mpsc;

pub const EXPORT_KEY: &str = "meridian.io/export";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// One RBAC grant: (API group, resource, verbs), the core group being `""`.
pub type Access = (&'static str, &'static str, &'static [&'static str]);

/// What this source asks of the Kubernetes API. Each kind is a reflector
/// store over all namespaces (`Api::all`, even with `namespaces` set), so it
/// needs `list` then `watch`, cluster-wide: a ClusterRole.
/// `deploy/base/agent/clusterrole.yaml` grants exactly this, and
/// `tests/tests/deploy_manifests.rs` keeps the two equal.
pub const REQUIRED_ACCESS: &[Access] = &[
    watched::<Service>(),
    watched::<EndpointSlice>(),
    watched::<Node>(),
];

const fn watched<K: k8s_openapi::Resource>() -> Access {
    (K::GROUP, K::URL_PATH_SEGMENT, &["list", "watch"])
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubernetesOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Only these namespaces; all when empty.
    pub namespaces: Vec<String>,
}

fn exported(service: &Service, options: &KubernetesOptions) -> bool {
    let namespace = service.namespace().unwrap_or_default();
    let in_scope = options.namespaces.is_empty() || options.namespaces.contains(&namespace);
    let opted_in =
        |map: &BTreeMap<String, String>| map.get(EXPORT_KEY).is_some_and(|v| v == "true");
    in_scope && (opted_in(service.labels()) || opted_in(service.annotations()))
}

fn health(conditions: Option<&k8s_openapi::api::discovery::v1::EndpointConditions>) -> Health {
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    match (terminating, ready) {
        (true, _) => Health::Draining,
        (false, true) => Health::Healthy,
        (false, false) => Health::Unhealthy,
    }
}

/// The view the stores describe. Pure.
pub fn build_view(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    nodes: &[Arc<Node>],
    options: &KubernetesOptions,
) -> View {
    let node_zone: BTreeMap<String, String> = nodes
        .iter()
        .filter_map(|n| Some((n.name_any(), n.labels().get(ZONE_LABEL)?.clone())))
        .collect();
    let mut view = View::new();
    for service in services.iter().filter(|s| exported(s, options)) {
        let namespace = service.namespace().unwrap_or_default();
        let name = service.name_any();
        let port_name = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .and_then(|p| p.first())
            .and_then(|p| p.name.clone());
        let mut endpoints = Vec::new();
        let owned = slices.iter().filter(|slice| {
            slice.namespace().as_deref() == Some(namespace.as_str())
                && slice.labels().get(SERVICE_NAME_LABEL) == Some(&name)
        });
        for slice in owned {
            let ports = slice.ports.clone().unwrap_or_default();
            let port = ports
                .iter()
                .find(|p| p.name.is_some() && p.name == port_name)
                .or(ports.first())
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok());
            let Some(port) = port else { continue };
            for ep in &slice.endpoints {
                let zone = ep.zone.clone().or_else(|| {
                    ep.node_name
                        .as_ref()
                        .and_then(|n| node_zone.get(n).cloned())
                });
                for address in &ep.addresses {
                    endpoints.push(Endpoint {
                        address: address.clone(),
                        port,
                        weight: 1,
                        zone: zone.clone(),
                        health: health(ep.conditions.as_ref()),
                    });
                }
            }
        }
        view.insert(ServiceName::new(&namespace, &name), normalise(endpoints));
    }
    view
}

pub struct KubernetesSource {
    options: KubernetesOptions,
}

impl KubernetesSource {
    pub fn new(options: KubernetesOptions) -> Self {
        KubernetesSource { options }
    }
}

async fn client(options: &KubernetesOptions) -> Result<Client, String> {
    let config = match &options.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| format!("reading kubeconfig {}: {e}", path.display()))?;
            let select = KubeConfigOptions {
                context: options.context.clone(),
                ..Default::default()
            };
            Config::from_custom_kubeconfig(kubeconfig, &select)
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration found: {e}"))?,
    };
    Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

impl Source for KubernetesSource {
    fn event_name(&self) -> &'static str {
        "source.kubernetes.event"
    }

    fn run(self: Box<Self>, updates: mpsc::Sender<SourceUpdate>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut last = None;
            let client = loop {
                match client(&self.options).await {
                    Ok(client) => break client,
                    Err(e) => {
                        if !send_if_new(&updates, &mut last, SourceUpdate::Error(e)).await {
                            return;
                        }
                        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    }
                }
            };
            let (services, services_writer) = reflector::store::<Service>();
            let (slices, slices_writer) = reflector::store::<EndpointSlice>();
            let (nodes, nodes_writer) = reflector::store::<Node>();
            let config = watcher::Config::default();
            let events = stream::select_all([
                reflector(
                    services_writer,
                    watcher(Api::<Service>::all(client.clone()), config.clone()),
                )
                .default_backoff()
                .map(|r| r.map(drop).map_err(|e| format!("watching Services: {e}")))
                .boxed(),
                reflector(
                    slices_writer,
                    watcher(Api::<EndpointSlice>::all(client.clone()), config.clone()),
                )
                .default_backoff()
                .map(|r| {
                    r.map(drop)
                        .map_err(|e| format!("watching EndpointSlices: {e}"))
                })
                .boxed(),
                reflector(nodes_writer, watcher(Api::<Node>::all(client), config))
                    .default_backoff()
                    .map(|r| r.map(drop).map_err(|e| format!("watching Nodes: {e}")))
                    .boxed(),
            ]);
            let mut events = std::pin::pin!(events);
            // Nothing is reported until every store has listed once: a partial
            // view would look like services disappearing.
            let ready = async {
                let _ = tokio::join!(
                    services.wait_until_ready(),
                    slices.wait_until_ready(),
                    nodes.wait_until_ready()
                );
            };
            let mut ready = std::pin::pin!(ready);
            let mut listed = false;
            loop {
                tokio::select! {
                    event = events.next() => {
                        let update = match event {
                            None => return,
                            Some(Err(e)) => SourceUpdate::Error(e),
                            Some(Ok(())) if listed => SourceUpdate::View(build_view(&services.state(), &slices.state(), &nodes.state(), &self.options)),
                            Some(Ok(())) => continue,
                        };
                        if !send_if_new(&updates, &mut last, update).await {
                            return;
                        }
                    }
                    _ = &mut ready, if !listed => {
                        listed = true;
                        let view = build_view(&services.state(), &slices.state(), &nodes.state(), &self.options);
                        if !send_if_new(&updates, &mut last, SourceUpdate::View(view)).await {
                            return;
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(value).expect("valid object"))
    }

    #[test]
    fn maps_services_slices_and_nodes() {
        let services = vec![
            parse::<Service>(
                json!({"metadata": {"name": "web", "namespace": "a", "annotations": {EXPORT_KEY: "true"}},
                "spec": {"ports": [{"name": "http", "port": 80}]}}),
            ),
            parse::<Service>(
                json!({"metadata": {"name": "db", "namespace": "a"}, "spec": {"ports": [{"port": 5432}]}}),
            ),
            parse::<Service>(
                json!({"metadata": {"name": "web", "namespace": "b", "labels": {EXPORT_KEY: "true"}}}),
            ),
        ];
        let slices = vec![parse::<EndpointSlice>(json!({
            "metadata": {"name": "web-1", "namespace": "a", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "admin", "port": 9000}, {"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}, "nodeName": "n1"},
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "zone": "z9"},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}},
            ],
        }))];
        let nodes = vec![parse::<Node>(
            json!({"metadata": {"name": "n1", "labels": {ZONE_LABEL: "z1"}}}),
        )];
        let options = KubernetesOptions {
            namespaces: vec!["a".into()],
            ..Default::default()
        };
        let view = build_view(&services, &slices, &nodes, &options);
        assert_eq!(
            view.keys().cloned().collect::<Vec<_>>(),
            vec![ServiceName::new("a", "web")],
            "opt-in and namespace selector"
        );
        let summary: Vec<(String, u16, Health, Option<String>)> = view
            [&ServiceName::new("a", "web")]
            .iter()
            .map(|e| (e.address.clone(), e.port, e.health, e.zone.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("10.0.0.1".into(), 8080, Health::Healthy, Some("z9".into())),
                ("10.0.0.2".into(), 8080, Health::Draining, Some("z1".into())),
                ("10.0.0.3".into(), 8080, Health::Unhealthy, None),
            ]
        );
    }
}
