//! The control plane's StatefulSet: a Raft cluster of its own pods, each
//! started by its entrypoint as the node its ordinal names.

use crate::scripts::Sandbox;
use crate::workload::{subset, volume_of, Binary, Build, Pod, Run};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The StatefulSet founds a Raft cluster of its own pods, and its entrypoint
/// runs pod K as node K+1 with that node's certificate.
pub(crate) fn check_statefulset(build: &Build, pod: &Pod) {
    let Some(sts) = pod.statefulset else { return };
    let spec = sts.spec.as_ref().expect("a spec");
    let name = sts.metadata.name.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    assert!(
        replicas >= 3 && replicas % 2 == 1,
        "{name}: an odd number of at least three nodes"
    );
    assert_eq!(
        spec.pod_management_policy.as_deref(),
        Some("Parallel"),
        "{name}: OrderedReady would wait for a quorum that cannot form"
    );
    let c = pod
        .spec
        .containers
        .iter()
        .find(|c| Run::new(c).binary == Some(Binary::Server))
        .unwrap_or_else(|| panic!("{name} runs no meridian server"));
    let run = Run::new(c);
    let grpc = run.listener("--grpc-addr");
    let peers = spec
        .service_name
        .clone()
        .unwrap_or_else(|| panic!("{name}: serviceName"));
    let headless = build
        .services()
        .find(|s| s.metadata.name.as_deref() == Some(&peers))
        .unwrap_or_else(|| panic!("{name}: no Service {peers}"));
    let hs = headless.spec.clone().unwrap_or_default();
    assert_eq!(
        hs.cluster_ip.as_deref(),
        Some("None"),
        "{peers} must be headless"
    );
    assert_eq!(
        hs.publish_not_ready_addresses,
        Some(true),
        "{peers}: unready nodes must find each other to elect a leader"
    );
    assert!(
        subset(&hs.selector.unwrap_or_default(), &pod.labels),
        "{peers} does not select {name}'s pods"
    );
    assert!(
        hs.ports
            .iter()
            .flatten()
            .any(|p| p.target_port.as_ref().and_then(|t| run.port(t)) == Some(grpc)),
        "{peers} does not expose gRPC port {grpc}"
    );
    let members = run
        .setting("--initial-cluster")
        .unwrap_or_else(|| panic!("{name}: --initial-cluster"));
    let members: BTreeMap<i32, String> = members
        .split(',')
        .map(|m| {
            m.split_once('=')
                .map(|(id, a)| (id.parse().expect("a node id"), a.to_string()))
                .expect("ID=HOST:PORT")
        })
        .collect();
    let founding = i32::try_from(members.len()).expect("a few members");
    let ids: Vec<i32> = members.keys().copied().collect();
    assert!(
        founding >= 3 && founding <= replicas && ids == (1..=founding).collect::<Vec<_>>(),
        "{name}: founding members {ids:?} are not nodes 1..=N of its {replicas} pods"
    );
    for (id, addr) in &members {
        let host = format!("{name}-{}.{peers}", id - 1);
        let ok = addr == &format!("{host}:{grpc}")
            || (addr.starts_with(&format!("{host}.")) && addr.ends_with(&format!(":{grpc}")));
        assert!(
            ok,
            "{name}: member {id} is {addr}, not pod {host} on port {grpc}"
        );
    }
    let (data, _) = volume_of(c, &run.setting("--data-dir").expect("--data-dir"));
    assert!(
        spec.volume_claim_templates
            .iter()
            .flatten()
            .any(|t| t.metadata.name.as_deref() == Some(&data)),
        "{name}: --data-dir is not on a persistent volume"
    );

    // The entrypoint, with a stand-in `meridian` that reports what it got.
    let sandbox = Sandbox::new(pod.spec);
    let mut files = vec![
        "ca.pem".to_string(),
        "ca.key".into(),
        "trust-domain".into(),
        "bundle.pem".into(),
    ];
    files.extend(
        (1..=replicas + 1).flat_map(|i| [format!("node-{i}.pem"), format!("node-{i}.key")]),
    );
    sandbox.fill_secrets(&files);
    for ordinal in 0..=replicas {
        let out = sandbox.run(c, &format!("{name}-{ordinal}"));
        let id = ordinal + 1;
        assert_eq!(out["node_id"], id.to_string(), "pod {name}-{ordinal}");
        for (key, file) in [
            ("cert", format!("node-{id}.pem")),
            ("key", format!("node-{id}.key")),
        ] {
            let path = PathBuf::from(&out[key]);
            assert_eq!(
                path.file_name().and_then(|f| f.to_str()),
                Some(file.as_str()),
                "pod {name}-{ordinal}: {key}"
            );
            assert!(
                std::fs::read_to_string(&path).is_ok_and(|t| t.ends_with(&file)),
                "pod {name}-{ordinal}: {key} is not from a Secret"
            );
        }
        let expected = if id <= founding {
            members.values().cloned().collect::<Vec<_>>().join(",")
        } else {
            "<unset>".into()
        };
        assert_eq!(
            out["initial_cluster"]
                .split(',')
                .map(|m| m.split_once('=').map_or(m, |(_, a)| a))
                .collect::<Vec<_>>()
                .join(","),
            expected,
            "pod {name}-{ordinal}: founding members"
        );
        assert_eq!(
            out["args"],
            run.args().join(" "),
            "pod {name}-{ordinal}: arguments passed through"
        );
        let key = PathBuf::from(&out["ca_dir"]).join("ca.key");
        let mode = std::fs::metadata(&key).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(
            mode.ok(),
            Some(0o600),
            "pod {name}-{ordinal}: the CA key copy must be private"
        );
    }
}
