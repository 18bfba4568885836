//! Reading deploy/: typed objects, and what each kustomization builds.

use crate::shown;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde_json::Value as Json;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A manifest as the typed object of its kind.
#[allow(clippy::large_enum_variant)] // a few dozen objects, read once
#[derive(Clone)]
pub(crate) enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Service(Service),
    ConfigMap(ConfigMap),
    StatefulSet(StatefulSet),
    Deployment(Deployment),
    DaemonSet(DaemonSet),
    Role(Role),
    ClusterRole(ClusterRole),
    RoleBinding(RoleBinding),
    ClusterRoleBinding(ClusterRoleBinding),
    PodDisruptionBudget(PodDisruptionBudget),
}

impl Object {
    /// Kind and metadata, whatever the kind.
    pub(crate) fn id(&self) -> (&'static str, &ObjectMeta) {
        fn of<T: Resource + Metadata<Ty = ObjectMeta>>(x: &T) -> (&'static str, &ObjectMeta) {
            (T::KIND, x.metadata())
        }
        match self {
            Object::Namespace(x) => of(x),
            Object::ServiceAccount(x) => of(x),
            Object::Service(x) => of(x),
            Object::ConfigMap(x) => of(x),
            Object::StatefulSet(x) => of(x),
            Object::Deployment(x) => of(x),
            Object::DaemonSet(x) => of(x),
            Object::Role(x) => of(x),
            Object::ClusterRole(x) => of(x),
            Object::RoleBinding(x) => of(x),
            Object::ClusterRoleBinding(x) => of(x),
            Object::PodDisruptionBudget(x) => of(x),
        }
    }
}

/// `doc` as a `T`, refusing fields the typed object drops (misspelt or misplaced).
fn typed<T>(doc: &Value, origin: &str) -> T
where
    T: Resource + serde::de::DeserializeOwned + serde::Serialize,
{
    assert_eq!(
        doc["apiVersion"].as_str(),
        Some(T::API_VERSION),
        "{origin}: apiVersion of a {}",
        T::KIND
    );
    let object: T = serde_yaml::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{origin}: not a valid {}: {e}", T::KIND));
    let original = serde_json::to_value(doc).expect("YAML as JSON");
    let again = serde_json::to_value(&object).expect("typed object as JSON");
    let mut dropped = Vec::new();
    not_kept("", &original, &again, &mut dropped);
    assert!(
        dropped.is_empty(),
        "{origin}: {} does not know {dropped:?}",
        T::KIND
    );
    object
}

/// The paths in `original` that `again` lacks or holds differently.
fn not_kept(path: &str, original: &Json, again: &Json, out: &mut Vec<String>) {
    match (original, again) {
        (Json::Object(a), Json::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(kept) => not_kept(&format!("{path}.{key}"), value, kept, out),
                    None => out.push(format!("{path}.{key}")),
                }
            }
        }
        (Json::Array(a), Json::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                not_kept(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a == b => {}
        _ => out.push(path.to_string()),
    }
}

/// `doc` as its kind's object; an unknown kind fails.
pub(crate) fn parse(doc: &Value, origin: &str) -> Object {
    match doc["kind"].as_str().unwrap_or_default() {
        "Namespace" => Object::Namespace(typed(doc, origin)),
        "ServiceAccount" => Object::ServiceAccount(typed(doc, origin)),
        "Service" => Object::Service(typed(doc, origin)),
        "ConfigMap" => Object::ConfigMap(typed(doc, origin)),
        "StatefulSet" => Object::StatefulSet(typed(doc, origin)),
        "Deployment" => Object::Deployment(typed(doc, origin)),
        "DaemonSet" => Object::DaemonSet(typed(doc, origin)),
        "Role" => Object::Role(typed(doc, origin)),
        "ClusterRole" => Object::ClusterRole(typed(doc, origin)),
        "RoleBinding" => Object::RoleBinding(typed(doc, origin)),
        "ClusterRoleBinding" => Object::ClusterRoleBinding(typed(doc, origin)),
        "PodDisruptionBudget" => Object::PodDisruptionBudget(typed(doc, origin)),
        other => panic!("{origin}: unknown kind '{other}'; teach deploy_manifests.rs to check it"),
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read a manifest");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", shown(path)))
        })
        .filter(|d: &Value| !d.is_null())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    let list = value.as_sequence().map(Vec::as_slice).unwrap_or_default();
    list.iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect()
}

/// What a kustomization builds: its resources' objects, its generated
/// ConfigMaps, and the image names its `images` retarget. Only the fields
/// deploy/ uses are understood; any other fails, so this cannot drift into
/// checking something kustomize would build differently.
pub(crate) fn build(dir: &Path) -> (Vec<Object>, Vec<String>) {
    let file = dir.join("kustomization.yaml");
    let origin = shown(&file);
    let docs = documents(&file);
    let [k] = docs.as_slice() else {
        panic!("{origin}: one document")
    };
    assert_eq!(k["kind"].as_str(), Some("Kustomization"), "{origin}");
    for key in k.as_mapping().expect("a mapping").keys() {
        let known = [
            "apiVersion",
            "kind",
            "resources",
            "configMapGenerator",
            "images",
        ];
        assert!(
            known.contains(&key.as_str().unwrap_or_default()),
            "{origin}: {key:?} is not understood by this test"
        );
    }
    let (mut objects, mut images) = (Vec::new(), Vec::new());
    let mut listed = BTreeSet::new();
    for resource in strings(&k["resources"]) {
        let path = dir.join(&resource);
        assert!(
            path.exists(),
            "{origin}: resource {resource} does not exist"
        );
        let path = path.canonicalize().expect("an existing path");
        if path.is_dir() {
            let (more, more_images) = build(&path);
            objects.extend(more);
            images.extend(more_images);
        } else {
            listed.insert(resource.clone());
            for doc in documents(&path) {
                objects.push(parse(&doc, &shown(&path)));
            }
        }
    }
    let present: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("list a directory")
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, present,
        "{origin}: resources must list exactly the manifests in its directory"
    );
    for generator in k["configMapGenerator"]
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let name = generator["name"].as_str().expect("a generator's name");
        let namespace = generator["namespace"].as_str().map(String::from);
        let literals: BTreeMap<String, String> = strings(&generator["literals"])
            .iter()
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.into(), v.into()))
                    .expect("KEY=VALUE")
            })
            .collect();
        let existing = objects.iter_mut().find_map(|o| match o {
            Object::ConfigMap(c)
                if c.metadata.name.as_deref() == Some(name)
                    && c.metadata.namespace == namespace =>
            {
                Some(c)
            }
            _ => None,
        });
        match (generator["behavior"].as_str().unwrap_or("create"), existing) {
            ("create", None) => objects.push(Object::ConfigMap(ConfigMap {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace,
                    ..Default::default()
                },
                data: Some(literals),
                ..Default::default()
            })),
            ("merge", Some(c)) => c.data.get_or_insert_with(BTreeMap::new).extend(literals),
            ("replace", Some(c)) => c.data = Some(literals),
            (behavior, found) => panic!(
                "{origin}: {behavior} of ConfigMap {name} (exists: {})",
                found.is_some()
            ),
        }
    }
    for image in k["images"]
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        images.push(image["name"].as_str().expect("an image's name").to_string());
    }
    (objects, images)
}
