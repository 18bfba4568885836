//! Checks between resources: what a write refers to must exist, and what is
//! still referred to must not be deleted.

use crate::{
    plan::StateView,
    spec::{FailoverPolicySpec, TrafficSplitSpec},
    Kind, Rejection, Resource, ResourceKey, Spec,
};

fn service_key(namespace: &str, name: &str) -> ResourceKey {
    ResourceKey {
        kind: Kind::Service,
        namespace: namespace.to_string(),
        name: name.to_string(),
        cluster: String::new(),
    }
}

fn cluster_key(name: &str) -> ResourceKey {
    ResourceKey {
        kind: Kind::Cluster,
        namespace: String::new(),
        name: name.to_string(),
        cluster: String::new(),
    }
}

/// Everything `resource` refers to must exist in `view`.
pub fn check_references(view: &dyn StateView, resource: &Resource) -> Result<(), Rejection> {
    let namespace = resource.metadata.namespace.as_deref().unwrap_or_default();
    match &resource.spec {
        Spec::Cluster(_) | Spec::Service(_) | Spec::BootstrapToken(_) => Ok(()),
        Spec::Endpoints(_) => {
            let cluster = resource.metadata.cluster.as_deref().unwrap_or_default();
            require(view, &cluster_key(cluster), "metadata.cluster")
        }
        Spec::TrafficSplit(split) => {
            for (i, (ns, name)) in split_refs(split, namespace).into_iter().enumerate() {
                let field = match i {
                    0 => "spec.service".to_string(),
                    n => format!("spec.backends[{}].service", n - 1),
                };
                require(view, &service_key(&ns, &name), &field)?;
            }
            Ok(())
        }
        Spec::FailoverPolicy(policy) => {
            if let Ok((ns, name)) = policy.validate(namespace) {
                require(view, &service_key(&ns, &name), "spec.service")?;
            }
            for (i, cluster) in policy.order.iter().enumerate() {
                require(view, &cluster_key(cluster), &format!("spec.order[{i}]"))?;
            }
            Ok(())
        }
    }
}

/// Nothing in `view` may still refer to `key`.
pub fn check_delete(view: &dyn StateView, key: &ResourceKey) -> Result<(), Rejection> {
    let referrers: Vec<ResourceKey> = match key.kind {
        Kind::Service => {
            let target = (key.namespace.clone(), key.name.clone());
            let splits = view
                .list(Kind::TrafficSplit)
                .into_iter()
                .filter(|r| match &r.spec {
                    Spec::TrafficSplit(s) => {
                        split_refs(s, r.metadata.namespace.as_deref().unwrap_or_default())
                            .contains(&target)
                    }
                    _ => false,
                });
            let policies = view
                .list(Kind::FailoverPolicy)
                .into_iter()
                .filter(|r| match &r.spec {
                    Spec::FailoverPolicy(p) => policy_service(p, r) == Some(target.clone()),
                    _ => false,
                });
            splits.chain(policies).map(|r| r.key()).collect()
        }
        Kind::Cluster => {
            let policies = view
                .list(Kind::FailoverPolicy)
                .into_iter()
                .filter(|r| match &r.spec {
                    Spec::FailoverPolicy(p) => p.order.contains(&key.name),
                    _ => false,
                });
            let endpoints = view
                .list(Kind::Endpoints)
                .into_iter()
                .filter(|r| r.metadata.cluster.as_deref() == Some(key.name.as_str()));
            policies.chain(endpoints).map(|r| r.key()).collect()
        }
        Kind::Endpoints | Kind::TrafficSplit | Kind::FailoverPolicy | Kind::BootstrapToken => {
            Vec::new()
        }
    };
    match referrers.first() {
        None => Ok(()),
        Some(first) => Err(Rejection::precondition(format!(
            "cannot delete {key}: still referred to by {first}{}",
            match referrers.len() {
                1 => String::new(),
                n => format!(" and {} more", n - 1),
            }
        ))),
    }
}

fn split_refs(split: &TrafficSplitSpec, namespace: &str) -> Vec<(String, String)> {
    split.validate(namespace).unwrap_or_default()
}

fn policy_service(policy: &FailoverPolicySpec, resource: &Resource) -> Option<(String, String)> {
    policy
        .validate(resource.metadata.namespace.as_deref().unwrap_or_default())
        .ok()
}

fn require(view: &dyn StateView, key: &ResourceKey, field: &str) -> Result<(), Rejection> {
    if view.get(key).is_some() {
        Ok(())
    } else {
        let what = match key.kind {
            Kind::Cluster => format!("unknown cluster '{}'", key.name),
            _ => format!("unknown {} {}/{}", key.kind, key.namespace, key.name),
        };
        Err(Rejection::precondition(format!("{field}: {what}")))
    }
}
