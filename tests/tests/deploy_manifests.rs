//! The Kubernetes manifests in `deploy/` hold together: every document is the
//! typed object of its kind with no field Kubernetes would drop, each
//! kustomization lists its directory, and in every kustomization's build the
//! agent's RBAC is exactly what its source calls, probes reach the ports and
//! paths the binaries serve, the StatefulSet's peers are its own pods, its
//! entrypoint gives pod K node K+1, and every flag and `MERIDIAN_*` variable
//! exists in the binary's `--help`.

#[path = "deploy_manifests/checks.rs"]
mod checks;
#[path = "deploy_manifests/load.rs"]
mod load;
#[path = "deploy_manifests/scripts.rs"]
mod scripts;
#[path = "deploy_manifests/statefulset.rs"]
mod statefulset;
#[path = "deploy_manifests/workload.rs"]
mod workload;

use checks::{
    check_flags, check_pod, check_probes, check_rbac, check_secrets_documented, check_services,
};
use load::{build, parse, Object};
use scripts::check_init_containers;
use serde_yaml::Value;
use statefulset::check_statefulset;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use workload::{Binary, Build, Pod, Run};

pub(crate) fn repo() -> PathBuf {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// A path as messages show it: from the repository's root.
pub(crate) fn shown(path: &Path) -> String {
    let root = repo();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every directory of deploy/ holding manifests, each with its kustomization.
fn kustomization_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut yaml = false;
    for entry in std::fs::read_dir(dir).expect("list deploy/") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            kustomization_dirs(&path, out);
        } else {
            yaml |= path.extension().is_some_and(|e| e == "yaml" || e == "yml");
            assert!(
                path.extension().is_none_or(|e| e != "yml"),
                "{}: name it .yaml",
                shown(&path)
            );
        }
    }
    if yaml {
        assert!(
            dir.join("kustomization.yaml").exists(),
            "{}: manifests outside a kustomization",
            shown(dir)
        );
        out.push(dir.to_path_buf());
    }
}

/// What every kustomization (bases and overlays) builds, with its `images` names.
fn builds() -> Vec<(PathBuf, Build, Vec<String>)> {
    let mut dirs = Vec::new();
    kustomization_dirs(&repo().join("deploy"), &mut dirs);
    dirs.sort();
    assert!(dirs.len() >= 5, "deploy/ has bases and overlays: {dirs:?}");
    dirs.into_iter()
        .map(|dir| {
            let (objects, images) = build(&dir);
            (dir, Build { objects }, images)
        })
        .collect()
}

#[test]
fn every_manifest_is_a_typed_object_that_kustomize_builds_as_read() {
    for (dir, build, images) in builds() {
        let pods = build.pods();
        let containers = pods.iter().flat_map(|p| {
            p.spec
                .containers
                .iter()
                .chain(p.spec.init_containers.iter().flatten())
        });
        let names: BTreeSet<&str> = containers
            .filter_map(|c| c.image.as_deref()?.split(':').next())
            .collect();
        for image in &images {
            assert!(
                names.contains(image.as_str()),
                "{}: images[{image}] matches no container",
                shown(&dir)
            );
        }
        if dir.starts_with(repo().join("deploy/overlays")) {
            for object in &build.objects {
                let Object::ConfigMap(c) = object else {
                    continue;
                };
                let unset = c
                    .data
                    .iter()
                    .flatten()
                    .any(|(_, v)| v.contains("CHANGE-ME"));
                assert!(
                    !unset,
                    "{}: {:?} is left to set",
                    shown(&dir),
                    c.metadata.name
                );
            }
        }
        if let Some(kubectl) = which("kubectl") {
            cross_check(&kubectl, &dir, &build);
        }
    }
}

#[test]
fn the_agent_is_granted_exactly_what_its_kubernetes_source_calls() {
    let mut agents = 0;
    for (_, build, _) in builds() {
        let pods = build.pods();
        check_rbac(&build, &pods);
        let runs_agent = |p: &&Pod| {
            p.spec
                .containers
                .iter()
                .any(|c| Run::new(c).binary == Some(Binary::Agent))
        };
        agents += pods.iter().filter(runs_agent).count();
    }
    assert!(agents > 0, "the check saw an agent");
}

#[test]
fn flags_and_probes_match_the_binaries() {
    for (_, build, _) in builds() {
        for pod in build.pods() {
            for c in pod
                .spec
                .containers
                .iter()
                .chain(pod.spec.init_containers.iter().flatten())
            {
                let run = Run::new(c);
                check_flags(&run);
                check_probes(&run, &pod);
            }
        }
    }
}

#[test]
fn the_statefulset_founds_a_raft_cluster_of_its_own_pods() {
    let mut statefulsets = 0;
    for (_, build, _) in builds() {
        for pod in build.pods() {
            check_statefulset(&build, &pod);
            statefulsets += usize::from(pod.statefulset.is_some());
        }
    }
    assert!(statefulsets > 0, "the check saw the control plane");
}

#[test]
fn pods_run_unprivileged_and_refer_to_what_exists() {
    let docs =
        std::fs::read_to_string(repo().join("docs/kubernetes.md")).expect("docs/kubernetes.md");
    for (_, build, _) in builds() {
        let pods = build.pods();
        for pod in &pods {
            check_pod(&build, pod);
            check_init_containers(pod);
            check_secrets_documented(pod, &docs);
        }
        check_services(&build, &pods);
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        eprintln!("{name} is not installed: the builds were not compared with kustomize's");
    }
    found
}

/// What kustomize builds (through `kubectl kustomize`) is what this test checked.
fn cross_check(kubectl: &Path, dir: &Path, build: &Build) {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        shown(dir),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let theirs: BTreeSet<String> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("kustomize's YAML"))
        .map(|doc| summary(&parse(&doc, "kubectl kustomize"), true))
        .collect();
    let ours: BTreeSet<String> = build.objects.iter().map(|o| summary(o, false)).collect();
    assert_eq!(
        theirs,
        ours,
        "{}: kustomize builds other objects than this test checked",
        shown(dir)
    );
}

/// Kind, name and a ConfigMap's data; kustomize suffixes generated names with a hash.
fn summary(object: &Object, hashed: bool) -> String {
    let (kind, meta) = object.id();
    let name = meta.name.clone().unwrap_or_default();
    match object {
        Object::ConfigMap(c) => {
            let name = match name.rsplit_once('-') {
                Some((base, _)) if hashed => base.to_string(),
                _ => name,
            };
            format!("{kind}/{name} {:?}", c.data)
        }
        _ => format!("{kind}/{name}"),
    }
}
