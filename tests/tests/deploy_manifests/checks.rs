//! Flags, probes, pods, Services and RBAC against the binaries and the agent source.

use crate::load::Object;
use crate::workload::{declared_port, subset, volume_of, Binary, Build, Pod, Run};
use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meridian_federation::sources::kubernetes::REQUIRED_ACCESS;
use std::collections::{BTreeMap, BTreeSet};

/// An RBAC grant: (API group, resource, verb).
type Grant = (String, String, String);

/// Every flag and MERIDIAN_* variable exists; every $(VAR) is defined.
pub(crate) fn check_flags(run: &Run) {
    let c = run.c;
    let defined: Vec<&str> = c
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    for arg in run.args().iter().chain(c.command.iter().flatten()) {
        // Kubernetes expands $(NAME) in command and args; `$((` is the shell's.
        let vars = arg.split("$(").skip(1).filter_map(|s| s.split(')').next());
        for var in vars.filter(|v| {
            !v.is_empty() && v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        }) {
            assert!(
                defined.contains(&var),
                "container {}: $({var}) is not in its env",
                c.name
            );
        }
    }
    let Some(binary) = run.binary else { return };
    for arg in run.args().iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap_or_default();
        assert!(
            run.help.contains(&format!("{flag} ")) || run.help.contains(&format!("{flag}\n")),
            "container {}: {binary:?} has no flag {flag}",
            c.name
        );
    }
    let script = c.command.iter().flatten().flat_map(|s| {
        s.split(|ch: char| !(ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_'))
    });
    for name in defined
        .iter()
        .copied()
        .chain(script)
        .filter(|n| n.starts_with("MERIDIAN_"))
    {
        assert!(
            run.help.contains(&format!("[env: {name}=")),
            "container {}: {binary:?} reads no {name}",
            c.name
        );
    }
}

/// Probes reach the binary's HTTP listener on paths it serves; the control
/// plane is ready on /readyz and alive on /healthz, the proxy ready on /ready.
pub(crate) fn check_probes(run: &Run, pod: &Pod) {
    let c = run.c;
    let probes: Vec<(&str, &Probe)> = [
        ("readiness", &c.readiness_probe),
        ("liveness", &c.liveness_probe),
        ("startup", &c.startup_probe),
    ]
    .into_iter()
    .filter_map(|(kind, p)| Some((kind, p.as_ref()?)))
    .collect();
    let Some((flag, paths)) = run.binary.and_then(Binary::http) else {
        assert!(
            probes.is_empty(),
            "container {}: probes, but nothing listens",
            c.name
        );
        return;
    };
    let http = run.listener(flag);
    let mut listeners = vec![http];
    if run.binary == Some(Binary::Server) {
        listeners.push(run.listener("--grpc-addr"));
    }
    let mut seen = BTreeMap::new();
    for (kind, probe) in &probes {
        if let Some(get) = &probe.http_get {
            let path = get.path.clone().unwrap_or_default();
            assert_eq!(
                run.port(&get.port),
                Some(http),
                "container {}: {kind} probe port is not {flag}",
                c.name
            );
            assert!(
                paths.contains(&path.as_str()),
                "container {}: {kind} probe path {path} is not served",
                c.name
            );
            seen.insert(*kind, path);
        } else if let Some(tcp) = &probe.tcp_socket {
            let port = run.port(&tcp.port);
            assert!(
                port.is_some_and(|p| listeners.contains(&p)),
                "container {}: {kind} probe port {port:?} is no listener",
                c.name
            );
        } else {
            panic!(
                "container {}: {kind} probe is neither httpGet nor tcpSocket",
                c.name
            );
        }
    }
    let expected: &[(&str, &str)] = match run.binary {
        Some(Binary::Server) => &[("readiness", "/readyz"), ("liveness", "/healthz")],
        _ => &[("readiness", "/ready")],
    };
    for (kind, path) in expected {
        assert_eq!(
            seen.get(kind).map(String::as_str),
            Some(*path),
            "container {}: {kind} probe",
            c.name
        );
    }
    if let Some(port) = pod.annotations.get("prometheus.io/port") {
        assert_eq!(
            port,
            &http.to_string(),
            "{}: prometheus.io/port is not {flag}",
            pod.owner
        );
    }
}

/// Pod-level sanity: non-root, no escalation, requests, volumes, references.
pub(crate) fn check_pod(build: &Build, pod: &Pod) {
    let spec = pod.spec;
    let security = spec.security_context.clone().unwrap_or_default();
    assert_eq!(
        security.run_as_non_root,
        Some(true),
        "{}: runAsNonRoot",
        pod.owner
    );
    assert!(
        security.run_as_user.is_some_and(|u| u > 0),
        "{}: runAsUser",
        pod.owner
    );
    // What the namespace's Pod Security level "restricted" admits.
    let seccomp = security.seccomp_profile.map(|p| p.type_);
    assert_eq!(
        seccomp.as_deref(),
        Some("RuntimeDefault"),
        "{}: seccompProfile",
        pod.owner
    );
    let sa = spec
        .service_account_name
        .as_deref()
        .unwrap_or_else(|| panic!("{}: its own ServiceAccount", pod.owner));
    assert!(
        build.objects.iter().any(
            |o| matches!(o, Object::ServiceAccount(s) if s.metadata.name.as_deref() == Some(sa))
        ),
        "{}: no ServiceAccount {sa}",
        pod.owner
    );
    let mut volumes: BTreeMap<String, bool> = BTreeMap::new(); // name -> writable
    for v in spec.volumes.iter().flatten() {
        volumes.insert(
            v.name.clone(),
            v.empty_dir.is_some() || v.persistent_volume_claim.is_some(),
        );
    }
    let claims = pod
        .statefulset
        .and_then(|s| s.spec.as_ref()?.volume_claim_templates.clone())
        .unwrap_or_default();
    for claim in claims {
        volumes.insert(claim.metadata.name.unwrap_or_default(), true);
    }
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let sc = c.security_context.clone().unwrap_or_default();
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{} container {}: allowPrivilegeEscalation",
            pod.owner,
            c.name
        );
        let dropped = sc.capabilities.as_ref().and_then(|c| c.drop.clone());
        assert_eq!(
            dropped,
            Some(vec!["ALL".to_string()]),
            "{} container {}: capabilities.drop",
            pod.owner,
            c.name
        );
        assert_eq!(
            sc.read_only_root_filesystem,
            Some(true),
            "{} container {}: readOnlyRootFilesystem",
            pod.owner,
            c.name
        );
        let requests = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default();
        assert!(
            requests.contains_key("cpu") && requests.contains_key("memory"),
            "{} container {}: cpu and memory requests",
            pod.owner,
            c.name
        );
        for m in c.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains_key(&m.name),
                "{} container {}: no volume {}",
                pod.owner,
                c.name,
                m.name
            );
        }
        for e in c.env.iter().flatten() {
            let Some(r) = e
                .value_from
                .as_ref()
                .and_then(|f| f.config_map_key_ref.as_ref())
            else {
                continue;
            };
            let data = build
                .config_map(&r.name)
                .and_then(|m| m.data.clone())
                .unwrap_or_default();
            assert!(
                r.optional == Some(true) || data.contains_key(&r.key),
                "{} container {}: ConfigMap {} has no {}",
                pod.owner,
                c.name,
                r.name,
                r.key
            );
        }
        let run = Run::new(c);
        let mut written: Vec<String> = run
            .binary
            .iter()
            .flat_map(|b| b.writes())
            .filter_map(|f| run.setting(f))
            .collect();
        written.extend(
            ["MERIDIAN_CA_DIR", "TLS_DIR"]
                .iter()
                .filter_map(|v| run.env(v)),
        );
        for path in written {
            let (volume, _) = volume_of(c, &path);
            let mount = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == volume)
                .expect("mounted");
            assert!(
                volumes[&volume] && mount.read_only != Some(true),
                "{} container {}: {path} is written but {volume} is read-only",
                pod.owner,
                c.name
            );
        }
    }
}

/// Services select pods and reach their ports; PDBs select one workload.
pub(crate) fn check_services(build: &Build, pods: &[Pod]) {
    for service in build.services() {
        let name = service.metadata.name.clone().unwrap_or_default();
        let spec = service.spec.clone().unwrap_or_default();
        let selector = spec.selector.unwrap_or_default();
        let selected: Vec<&Pod> = pods
            .iter()
            .filter(|p| !selector.is_empty() && subset(&selector, &p.labels))
            .collect();
        assert!(!selected.is_empty(), "Service {name} selects no pods");
        for port in spec.ports.iter().flatten() {
            let target = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            for pod in &selected {
                let found = pod
                    .spec
                    .containers
                    .iter()
                    .any(|c| declared_port(c, &target).is_some());
                assert!(
                    found,
                    "Service {name}: port {:?} is no containerPort of {}",
                    port.name, pod.owner
                );
            }
        }
    }
    for object in &build.objects {
        let Object::PodDisruptionBudget(pdb) = object else {
            continue;
        };
        let spec = pdb.spec.clone().unwrap_or_default();
        let selector = spec
            .selector
            .and_then(|s| s.match_labels)
            .unwrap_or_default();
        let selected: Vec<&Pod> = pods
            .iter()
            .filter(|p| subset(&selector, &p.labels))
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "PodDisruptionBudget {:?} must select one workload",
            pdb.metadata.name
        );
        if let Some(sts) = selected[0].statefulset {
            let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let most = (replicas - 1) / 2;
            let ok = matches!(spec.max_unavailable, Some(IntOrString::Int(n)) if (1..=most).contains(&n));
            assert!(
                ok,
                "{}: maxUnavailable must be 1..={most} to keep a Raft quorum",
                selected[0].owner
            );
        }
    }
}

/// The agent's ServiceAccount is granted exactly REQUIRED_ACCESS, cluster-wide,
/// and no other account is granted anything.
pub(crate) fn check_rbac(build: &Build, pods: &[Pod]) {
    let mut agents = BTreeSet::new();
    for pod in pods {
        for c in &pod.spec.containers {
            let run = Run::new(c);
            if run.binary == Some(Binary::Agent)
                && run.setting("--source").as_deref() == Some("kubernetes")
            {
                assert_ne!(
                    pod.spec.automount_service_account_token,
                    Some(false),
                    "{}: the agent needs its token",
                    pod.owner
                );
                let ns = build.objects.iter().find_map(|o| match o {
                    Object::ServiceAccount(s)
                        if s.metadata.name == pod.spec.service_account_name =>
                    {
                        s.metadata.namespace.clone()
                    }
                    _ => None,
                });
                agents.insert((
                    ns.unwrap_or_default(),
                    pod.spec.service_account_name.clone().unwrap_or_default(),
                ));
            }
        }
    }
    let required: BTreeSet<Grant> = REQUIRED_ACCESS
        .iter()
        .flat_map(|(group, resource, verbs)| {
            verbs
                .iter()
                .map(|v| (group.to_string(), resource.to_string(), v.to_string()))
        })
        .collect();
    let mut granted: BTreeMap<(String, String), BTreeSet<Grant>> = BTreeMap::new();
    for object in &build.objects {
        let (binding, role_ref, subjects) = match object {
            Object::ClusterRoleBinding(b) => ("ClusterRoleBinding", &b.role_ref, &b.subjects),
            Object::RoleBinding(b) => ("RoleBinding", &b.role_ref, &b.subjects),
            _ => continue,
        };
        assert_eq!(
            (binding, role_ref.kind.as_str()),
            ("ClusterRoleBinding", "ClusterRole"),
            "the Kubernetes source watches all namespaces: a ClusterRole bound cluster-wide"
        );
        let rules = build.objects.iter().find_map(|o| match o {
            Object::ClusterRole(r) if r.metadata.name.as_deref() == Some(&role_ref.name) => {
                Some(r.rules.clone().unwrap_or_default())
            }
            _ => None,
        });
        let rules = rules.unwrap_or_else(|| {
            panic!(
                "{binding} refers to a missing ClusterRole {}",
                role_ref.name
            )
        });
        for s in subjects.iter().flatten() {
            let who = (s.namespace.clone().unwrap_or_default(), s.name.clone());
            assert!(
                s.kind == "ServiceAccount" && agents.contains(&who),
                "{binding} grants {who:?}, which runs no Kubernetes-source agent"
            );
            for rule in &rules {
                assert!(
                    rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
                    "ClusterRole {}: plain rules only",
                    role_ref.name
                );
                for group in rule.api_groups.iter().flatten() {
                    for resource in rule.resources.iter().flatten() {
                        for verb in &rule.verbs {
                            granted.entry(who.clone()).or_default().insert((
                                group.clone(),
                                resource.clone(),
                                verb.clone(),
                            ));
                        }
                    }
                }
            }
        }
    }
    for agent in &agents {
        assert_eq!(granted.get(agent), Some(&required), "ServiceAccount {agent:?}: grants must equal REQUIRED_ACCESS in federation/src/sources/kubernetes.rs");
    }
}

/// Every Secret a pod mounts or reads is one docs/kubernetes.md shows how to create.
pub(crate) fn check_secrets_documented(pod: &Pod, docs: &str) {
    let mounted = pod
        .spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.secret.as_ref()?.secret_name.clone());
    let containers = pod
        .spec
        .containers
        .iter()
        .chain(pod.spec.init_containers.iter().flatten());
    let named = containers
        .flat_map(|c| c.env.iter().flatten())
        .filter_map(|e| Some(e.value_from.as_ref()?.secret_key_ref.as_ref()?.name.clone()));
    for name in mounted.chain(named) {
        assert!(
            docs.contains(&format!("create secret generic {name}")),
            "{}: docs/kubernetes.md does not show how to create Secret {name}",
            pod.owner
        );
    }
}
