//! A node whose data dir was wiped, started again under its old id with the
//! same flags, is refused: it exits naming the peer that records it as
//! having held the cluster's data, before it serves anything, and the
//! cluster goes on with every acknowledged write. A founding member that
//! starts after the others formed the cluster and committed entries is
//! still admitted. Over mutual TLS, so peers are asked as a node. A node
//! added later with `members add` is guarded too when it knows a peer
//! through `--peer-address` (in plaintext, `--insecure`).

use meridian_proto::v1::{Consistency, GetRequest, PutRequest, ResourceKey};
use meridian_tests::pki::{dialer, tls_args, Pki};
use meridian_tests::{agreed_leader, cli, eventually, start_cluster, ServerNode, ServerOptions};
use std::{collections::BTreeSet, time::Duration};

const WAIT: Duration = Duration::from_secs(30);

fn cluster_manifest(name: &str) -> String {
    serde_json::json!({
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {"region": "us-east-1"}
    })
    .to_string()
}

/// Writes one Cluster through `node`; `Some(index)` once acknowledged.
async fn put_cluster(node: &ServerNode, name: &str) -> Option<u64> {
    let request = PutRequest {
        manifest_json: cluster_manifest(name),
        expected_revision: None,
    };
    let reply = node.client().await?.put(request).await.ok()?;
    Some(reply.into_inner().index)
}

/// Writes `name` through `node`, retrying until acknowledged.
async fn write(node: &ServerNode, name: &str, acknowledged: &mut Vec<String>) {
    let what = format!("write {name} through node {}", node.id);
    eventually(WAIT, &what, || put_cluster(node, name)).await;
    acknowledged.push(name.to_string());
}

async fn holds(node: &ServerNode, name: &str) -> bool {
    let request = GetRequest {
        key: Some(ResourceKey {
            kind: "Cluster".into(),
            name: name.into(),
            ..Default::default()
        }),
        consistency: Consistency::Linearizable as i32,
    };
    let Some(mut client) = node.client().await else {
        return false;
    };
    client.get(request).await.is_ok()
}

/// The nodes `node`'s replica records as having held the cluster's data.
async fn recorded(node: &ServerNode) -> Option<BTreeSet<u64>> {
    let status = node.status().await?;
    Some(status.bootstrapped.into_iter().collect())
}

/// Until every node of `nodes` records exactly `ids`.
async fn all_record(nodes: &[&ServerNode], ids: &[u64]) {
    let expected: BTreeSet<u64> = ids.iter().copied().collect();
    eventually(WAIT, &format!("every node to record {ids:?}"), || async {
        for node in nodes {
            if recorded(node).await? != expected {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Starts `node` and waits for it to exit by itself; asserts it failed.
async fn start_and_expect_refusal(node: &mut ServerNode) {
    node.start();
    let exit = eventually(WAIT, "the wiped node to exit", || {
        std::future::ready(node.exit_status())
    })
    .await;
    assert!(!exit.success(), "the wiped node exited with {exit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_refused_under_its_old_id_and_a_late_founder_is_admitted() {
    let root = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(root.path(), "ca");
    let alice = pki.issue("alice", &["--admin", "alice"]);
    let nodes: Vec<ServerNode> = (1..=3)
        .map(|id| {
            let files = pki.issue(&format!("node-{id}-cert"), &["--node", &id.to_string()]);
            let options = ServerOptions {
                global_args: tls_args(&files),
                dialer: dialer(&alice),
                ..ServerOptions::default()
            };
            ServerNode::new(root.path(), id, options)
        })
        .collect();
    let members = ServerNode::initial_cluster(&nodes.iter().collect::<Vec<_>>());
    let mut nodes: Vec<ServerNode> = nodes
        .into_iter()
        .map(|n| n.with_initial_cluster(&members))
        .collect();

    // Nodes 1 and 2 found the cluster, take writes and record themselves;
    // node 3 is not up yet.
    nodes[0].start();
    nodes[1].start();
    agreed_leader(&[&nodes[0], &nodes[1]]).await;
    let mut acknowledged = Vec::new();
    for i in 0..4 {
        write(&nodes[i % 2], &format!("before-3-{i}"), &mut acknowledged).await;
    }
    all_record(&[&nodes[0], &nodes[1]], &[1, 2]).await;

    // Node 3 starts late with the same flags: its peers hold committed
    // entries, but it never held data, so it is admitted, catches up and
    // records itself.
    nodes[2].start();
    all_record(&nodes.iter().collect::<Vec<_>>(), &[1, 2, 3]).await;
    let status = nodes[2].status().await.expect("node 3 status");
    assert!(status.leader.is_some(), "{status:?}");
    let voters = status.members.iter().filter(|m| m.role == "voter").count();
    assert_eq!(voters, 3, "{:?}", status.members);
    for i in 0..6 {
        write(&nodes[i % 3], &format!("with-3-{i}"), &mut acknowledged).await;
    }

    // Node 3 loses its data dir (a lost volume) and is started again with
    // the same flags: refused, before it serves anything.
    let log_before = nodes[2].log_tail(usize::MAX);
    nodes[2].kill();
    std::fs::remove_dir_all(&nodes[2].data_dir).expect("wipe node 3");
    start_and_expect_refusal(&mut nodes[2]).await;
    let log = nodes[2].log_tail(usize::MAX);
    for needed in [
        "node 3 starts with an empty data dir",
        "records that node 3 has already held this cluster's data",
        "meridian members remove 3",
    ] {
        assert!(log.contains(needed), "{needed}:\n{}", nodes[2].log_tail(10));
    }
    assert!(
        log.contains("but node 1 (at ") || log.contains("but node 2 (at "),
        "the peer that answered is named:\n{}",
        nodes[2].log_tail(10)
    );
    let served = |log: &str| log.matches("meridian server started").count();
    assert_eq!(
        served(&log),
        served(&log_before),
        "the refused node never served Raft, admin or xDS"
    );

    // Its refused start left an empty database behind: a supervisor that
    // restarts it gets the same answer.
    start_and_expect_refusal(&mut nodes[2]).await;
    let log = nodes[2].log_tail(usize::MAX);
    assert_eq!(
        log.matches("node 3 starts with an empty data dir").count(),
        2
    );

    // The cluster goes on: nodes 1 and 2 still run (a debug openraft leader
    // that met the wiped follower's log going backwards would have
    // stopped), still count node 3 a voter, take writes, and hold every
    // acknowledged write.
    assert!(!nodes[0].exited() && !nodes[1].exited(), "a founder exited");
    agreed_leader(&[&nodes[0], &nodes[1]]).await;
    for i in 0..4 {
        write(&nodes[i % 2], &format!("after-wipe-{i}"), &mut acknowledged).await;
    }
    for node in &nodes[..2] {
        for name in &acknowledged {
            assert!(holds(node, name).await, "node {} lost {name}", node.id);
        }
        let status = node.status().await.expect("status");
        let voters: BTreeSet<u64> = status
            .members
            .iter()
            .filter(|m| m.role == "voter")
            .map(|m| m.node_id)
            .collect();
        assert_eq!(voters, BTreeSet::from([1, 2, 3]), "node {}", node.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_later_is_guarded_when_it_knows_a_peer() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = start_cluster(root.path(), 3, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let mut acknowledged = Vec::new();
    write(&nodes[0], "before-4", &mut acknowledged).await;

    // Node 4 starts empty, without --initial-cluster, knowing node 1
    // through --peer-address: node 1 answers and does not record it (it
    // never held data), so it starts and waits to be added.
    let peer = format!("1={}", nodes[0].grpc);
    let mut added = ServerNode::new(root.path(), 4, ServerOptions::default())
        .with_args(["--peer-address".to_string(), peer]);
    added.start();
    eventually(WAIT, "node 4 to listen", || async {
        added.client().await.map(drop)
    })
    .await;
    let run = cli(
        &nodes[0].grpc,
        &["members", "add", "4", &added.grpc, "--voter"],
        None,
    );
    assert!(run.ok, "members add: {}", run.stderr);
    nodes.push(added);
    all_record(&nodes.iter().collect::<Vec<_>>(), &[1, 2, 3, 4]).await;
    for node in &nodes {
        let name = format!("with-4-via-{}", node.id);
        write(node, &name, &mut acknowledged).await;
    }

    // Wiped and started again with the same flags: refused by node 1.
    nodes[3].kill();
    std::fs::remove_dir_all(&nodes[3].data_dir).expect("wipe node 4");
    start_and_expect_refusal(&mut nodes[3]).await;
    let log = nodes[3].log_tail(usize::MAX);
    assert!(
        log.contains("node 4 starts with an empty data dir, but node 1 (at "),
        "{}",
        nodes[3].log_tail(10)
    );

    // Three of four voters remain: a quorum, which takes writes and holds
    // every acknowledged one.
    agreed_leader(&nodes[..3].iter().collect::<Vec<_>>()).await;
    write(&nodes[1], "after-wipe", &mut acknowledged).await;
    for node in &nodes[..3] {
        for name in &acknowledged {
            assert!(holds(node, name).await, "node {} lost {name}", node.id);
        }
    }
}
