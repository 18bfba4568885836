//! Backup and restore end to end: a three-node control plane over mutual
//! TLS saves a snapshot with `meridian snapshot save` (admins only), every
//! node is stopped, and a new three-node cluster restored from the file on
//! new addresses serves the same objects and goes on writing; a corrupt
//! file and a data dir in use are refused.

use meridian_identity::tls::TlsFiles;
use meridian_tests::pki::{dialer, tls_args, Pki};
use meridian_tests::{
    agreed_leader, cli_with, eventually,
    node::{start_cluster_with, ServerNode, ServerOptions},
    CliRun,
};
use std::{path::Path, time::Duration};

const MESH: &str = r#"
kind: Cluster
metadata: {name: us-east-1a}
spec: {region: us-east-1, zone: us-east-1a}
---
kind: Cluster
metadata: {name: us-west-2a}
spec: {region: us-west-2, zone: us-west-2a}
---
kind: Service
metadata: {name: checkout, namespace: shop}
spec: {protocol: http, port: 8080, retries: {attempts: 2, perTryTimeout: 1s}}
---
kind: Service
metadata: {name: checkout-v1, namespace: shop}
spec: {protocol: http, port: 8080}
---
kind: Service
metadata: {name: checkout-v2, namespace: shop}
spec: {protocol: http, port: 8080, lb: ring_hash, hashOn: "header:x-user"}
---
kind: Endpoints
metadata: {name: checkout, namespace: shop, cluster: us-east-1a}
spec:
  endpoints:
  - {address: 10.0.0.7, port: 8080, weight: 1, zone: us-east-1a, health: healthy}
  - {address: 10.0.0.8, port: 8080, weight: 3, zone: us-east-1a, health: draining}
---
kind: Endpoints
metadata: {name: checkout, namespace: shop, cluster: us-west-2a}
spec:
  endpoints:
  - {address: 10.1.0.7, port: 8080}
---
kind: TrafficSplit
metadata: {name: checkout, namespace: shop}
spec: {service: shop/checkout, backends: [{service: shop/checkout-v1, weight: 90}, {service: shop/checkout-v2, weight: 10}]}
---
kind: FailoverPolicy
metadata: {name: checkout, namespace: shop}
spec: {service: shop/checkout, order: [us-east-1a, us-west-2a], overprovisioningFactor: 1.4}
"#;

const KINDS: [&str; 6] = [
    "clusters",
    "services",
    "endpoints",
    "trafficsplits",
    "failoverpolicies",
    "tokens",
];

fn cli_as(files: &TlsFiles, server: &str, command: &[&str]) -> CliRun {
    meridian_tests::pki::cli_as(files, server, command, None)
}

/// `meridian snapshot ...` with no server and no TLS flags: restore and
/// status work offline.
fn offline(command: &[&str]) -> CliRun {
    cli_with(&[], "127.0.0.1:1", command, None)
}

/// Every object of every kind, as `get KIND -o json` prints it on `node`.
fn objects(admin: &TlsFiles, node: &ServerNode) -> Vec<serde_json::Value> {
    KINDS
        .iter()
        .map(|kind| {
            let run = cli_as(admin, &node.grpc, &["get", kind, "-o", "json"]);
            assert!(run.ok, "get {kind} on node {}: {}", node.id, run.stderr);
            serde_json::from_str(&run.stdout)
                .unwrap_or_else(|e| panic!("get {kind}: not JSON ({e}): {}", run.stdout))
        })
        .collect()
}

fn count(objects: &[serde_json::Value]) -> usize {
    objects
        .iter()
        .map(|list| list["items"].as_array().map_or(0, Vec::len))
        .sum()
}

fn restore(file: &Path, node: &ServerNode, members: &str) -> CliRun {
    offline(&[
        "snapshot",
        "restore",
        &file.display().to_string(),
        "--data-dir",
        &node.data_dir.display().to_string(),
        "--node-id",
        &node.id.to_string(),
        "--initial-cluster",
        members,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restored_from_a_snapshot_serves_the_same_objects() {
    let root = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(root.path(), "ca");
    let alice = pki.issue("alice", &["--admin", "alice"]);
    let bob = pki.issue("bob", &["--viewer", "bob"]);
    let node_files: Vec<TlsFiles> = (1..=3)
        .map(|id| pki.issue(&format!("node-{id}-cert"), &["--node", &id.to_string()]))
        .collect();
    let options = |id: u64| ServerOptions {
        global_args: tls_args(&node_files[(id - 1) as usize]),
        dialer: dialer(&alice),
        // The old cluster snapshots and purges its log as it goes.
        snapshot_threshold: 5,
        ..ServerOptions::default()
    };
    let old_root = root.path().join("old");
    std::fs::create_dir(&old_root).expect("mkdir");
    let mut old = start_cluster_with(&old_root, 3, options);
    let leader = agreed_leader(&old.iter().collect::<Vec<_>>()).await;

    let applied =
        meridian_tests::pki::cli_as(&alice, &old[1].grpc, &["apply", "-f", "-"], Some(MESH));
    assert!(applied.ok, "{}", applied.stderr);
    let token = cli_as(
        &alice,
        &old[0].grpc,
        &[
            "tokens",
            "create",
            "--role",
            "proxy",
            "--cluster",
            "us-east-1a",
        ],
    );
    assert!(token.ok, "{}", token.stderr);
    let before = objects(&alice, &old[2]);
    assert_eq!(count(&before), 10, "{before:?}");

    // A viewer may read objects but not take a snapshot: it holds token hashes.
    let file = root.path().join("backup").join("mesh.snapshot");
    std::fs::create_dir(file.parent().expect("parent")).expect("mkdir");
    let file_arg = file.display().to_string();
    let refused = cli_as(&bob, &old[0].grpc, &["snapshot", "save", &file_arg]);
    assert!(!refused.ok, "a viewer saved a snapshot: {}", refused.stdout);
    assert!(
        refused.stderr.contains("PermissionDenied") && refused.stderr.contains("admin"),
        "{}",
        refused.stderr
    );
    assert!(!file.exists());

    // An admin saves one through a follower (a linearizable read, like `get`).
    let follower = old.iter().find(|n| n.id != leader).expect("a follower");
    let saved = cli_as(&alice, &follower.grpc, &["snapshot", "save", &file_arg]);
    assert!(saved.ok, "{}", saved.stderr);
    assert!(saved.stdout.contains("objects:  10"), "{}", saved.stdout);
    let parts: Vec<_> = std::fs::read_dir(file.parent().expect("parent"))
        .expect("list")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(parts.len(), 1, "only the snapshot is left: {parts:?}");
    let status = offline(&["snapshot", "status", &file_arg]);
    assert!(
        status.ok && status.stdout.contains("FailoverPolicy: 1"),
        "{}{}",
        status.stdout,
        status.stderr
    );

    // The whole control plane is lost.
    for node in &mut old {
        node.kill();
    }

    let new_root = root.path().join("new");
    std::fs::create_dir(&new_root).expect("mkdir");
    let new: Vec<ServerNode> = (1..=3)
        .map(|id| ServerNode::new(&new_root, id, options(id)))
        .collect();
    let members = ServerNode::initial_cluster(&new.iter().collect::<Vec<_>>());

    // A corrupt or truncated file is refused, and nothing is created.
    let bytes = std::fs::read(&file).expect("read the snapshot");
    let corrupt = root.path().join("corrupt.snapshot");
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    std::fs::write(&corrupt, &flipped).expect("write");
    let run = restore(&corrupt, &new[0], &members);
    assert!(
        !run.ok && run.stderr.contains("checksum mismatch"),
        "{}",
        run.stderr
    );
    std::fs::write(&corrupt, &bytes[..bytes.len() - 100]).expect("write");
    let run = restore(&corrupt, &new[0], &members);
    assert!(
        !run.ok && run.stderr.contains("corrupt or truncated"),
        "{}",
        run.stderr
    );
    assert!(!new[0].data_dir.exists());

    // Every node of the new cluster from the same file, with its own id.
    for node in &new {
        let run = restore(&file, node, &members);
        assert!(run.ok, "restore node {}: {}", node.id, run.stderr);
        assert!(run.stdout.contains("restored 10 objects"), "{}", run.stdout);
    }
    // A data dir that holds anything is refused and left as it was.
    let run = restore(&file, &new[0], &members);
    assert!(
        !run.ok && run.stderr.contains("is not empty"),
        "{}",
        run.stderr
    );

    let mut new: Vec<ServerNode> = new
        .into_iter()
        .map(|n| n.with_initial_cluster(&members))
        .collect();
    // One node alone has no quorum, so nothing commits: what it reports as
    // committed is what it restored (the applied snapshot), not zero.
    new[0].start();
    let alone = eventually(
        Duration::from_secs(30),
        "the restored node's Status",
        || async { new[0].status().await.filter(|s| s.applied_index > 0) },
    )
    .await;
    assert!(
        alone.commit_index >= alone.applied_index,
        "committed {} behind applied {}",
        alone.commit_index,
        alone.applied_index
    );
    for node in &mut new[1..] {
        node.start();
    }
    agreed_leader(&new.iter().collect::<Vec<_>>()).await;
    for node in &new {
        let status = node.status().await.expect("status");
        let mut addrs: Vec<String> = status.members.iter().map(|m| m.addr.clone()).collect();
        addrs.sort();
        let mut expected: Vec<String> = new.iter().map(|n| n.grpc.clone()).collect();
        expected.sort();
        assert_eq!(addrs, expected, "the membership is the new cluster's");
        assert_eq!(
            objects(&alice, node),
            before,
            "node {} serves the saved objects",
            node.id
        );
    }

    // The restored cluster takes writes, with revisions after the saved ones.
    let newest = before
        .iter()
        .flat_map(|list| list["items"].as_array().cloned().unwrap_or_default())
        .filter_map(|item| item["metadata"]["revision"].as_u64())
        .max()
        .expect("revisions");
    let written = meridian_tests::pki::cli_as(
        &alice,
        &new[2].grpc,
        &["apply", "-f", "-"],
        Some("kind: Cluster\nmetadata: {name: eu-west-1a}\nspec: {region: eu-west-1}\n"),
    );
    assert!(written.ok, "{}", written.stderr);
    let revision: u64 = written
        .stdout
        .split("(revision ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {}", written.stdout));
    assert!(revision > newest, "revision {revision} after {newest}");
}
