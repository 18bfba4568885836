//! Breaking the control plane on purpose: three `meridian server` processes
//! while clients write and read through the admin API, and a seeded fault
//! loop kills nodes with SIGKILL (then restarts them on their data dirs) and
//! pauses them with SIGSTOP longer than the election timeout. Every
//! operation is recorded with its invocation and completion times and the
//! history is checked for linearizability; afterwards every node holds the
//! same state. A short run is part of CI; `scripts/chaos --duration D --seed
//! S` runs long ones (MERIDIAN_CHAOS_SECONDS, MERIDIAN_CHAOS_SEED).

use meridian_proto::v1::{Consistency, GetRequest, PutRequest, ResourceKey};
use meridian_tests::{
    agreed_leader, eventually,
    linearizability::{check, Kind, Operation},
    start_cluster, ServerNode, ServerOptions,
};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const KEYS: usize = 4;
const CLIENTS: usize = 3;
/// A client gives up on one operation after this long (its outcome is then unknown).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small seeded generator, so a run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn key(i: usize) -> String {
    format!("chaos-{i}")
}

fn manifest(key: &str, value: &str) -> String {
    serde_json::json!({
        "kind": "Cluster",
        "metadata": {"name": key},
        "spec": {"region": value},
    })
    .to_string()
}

/// One client's operation against `node`: `Some(kind)` with what it saw, or
/// `None` if no answer came.
async fn operate(node: &str, key: &str, write: Option<&str>) -> Option<Kind> {
    let channel = meridian_identity::tls::Dialer::insecure()
        .connect(node)
        .await
        .ok()?;
    let mut client = meridian_proto::v1::admin_client::AdminClient::new(channel);
    match write {
        Some(value) => {
            let request = PutRequest {
                manifest_json: manifest(key, value),
                expected_revision: None,
            };
            client.put(request).await.ok()?;
            Some(Kind::Write(value.to_string()))
        }
        None => read(&mut client, key, Consistency::Linearizable)
            .await
            .map(Kind::Read),
    }
}

/// A key's value as `client`'s node reads it: `Some(None)` when absent,
/// `None` when the read failed.
async fn read(
    client: &mut meridian_proto::v1::admin_client::AdminClient<tonic::transport::Channel>,
    key: &str,
    consistency: Consistency,
) -> Option<Option<String>> {
    let request = GetRequest {
        key: Some(ResourceKey {
            kind: "Cluster".into(),
            name: key.to_string(),
            ..Default::default()
        }),
        consistency: consistency as i32,
    };
    match client.get(request).await {
        Ok(resource) => {
            let value: serde_json::Value =
                serde_json::from_str(&resource.into_inner().manifest_json).ok()?;
            Some(Some(value["spec"]["region"].as_str()?.to_string()))
        }
        Err(status) if status.code() == tonic::Code::NotFound => Some(None),
        Err(_) => None,
    }
}

/// A client loop: random reads and writes of random keys on random nodes
/// until `stop`, recorded into `history`.
async fn client(
    id: usize,
    seed: u64,
    nodes: Vec<String>,
    started: Instant,
    stop: Instant,
    history: Arc<Mutex<Vec<Operation>>>,
) {
    let mut rng = Rng(seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut written = 0u64;
    // Bounded by `stop`, and each operation by OPERATION_TIMEOUT.
    while Instant::now() < stop {
        let key = key(rng.below(KEYS as u64) as usize);
        let node = &nodes[rng.below(nodes.len() as u64) as usize];
        let value = (rng.below(2) == 0).then(|| {
            written += 1;
            format!("c{id}-v{written}")
        });
        let invoked = started.elapsed().as_nanos() as u64;
        let outcome =
            tokio::time::timeout(OPERATION_TIMEOUT, operate(node, &key, value.as_deref()))
                .await
                .ok()
                .flatten();
        let completed = started.elapsed().as_nanos() as u64;
        let (kind, completed) = match (outcome, value) {
            (Some(kind), _) => (kind, Some(completed)),
            // A write without an answer may or may not have happened.
            (None, Some(value)) => (Kind::Write(value), None),
            // A read without an answer says nothing.
            (None, None) => continue,
        };
        history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Operation {
                key,
                kind,
                invoked,
                completed,
            });
    }
}

/// The faults: every couple of seconds one node is killed and restarted, or
/// paused past the election timeout and resumed. Never more than one node
/// down, so a quorum remains. Returns how many faults were injected.
async fn faults(nodes: &mut [ServerNode], seed: u64, stop: Instant) -> usize {
    let mut rng = Rng(seed);
    let mut injected = 0;
    while Instant::now() + Duration::from_secs(3) < stop {
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1_000))).await;
        let victim = rng.below(nodes.len() as u64) as usize;
        let node = &mut nodes[victim];
        if rng.below(2) == 0 {
            node.kill();
            tokio::time::sleep(Duration::from_millis(500 + rng.below(1_000))).await;
            node.start();
        } else {
            node.signal("STOP");
            tokio::time::sleep(Duration::from_millis(2_500)).await;
            node.signal("CONT");
        }
        injected += 1;
    }
    injected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_crashes_and_pauses_are_linearizable() {
    let seconds = setting("MERIDIAN_CHAOS_SECONDS", 15);
    let seed = setting("MERIDIAN_CHAOS_SEED", 7);
    let root = tempfile::tempdir().expect("temp dir");
    let mut nodes = start_cluster(root.path(), 3, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();

    let started = Instant::now();
    let stop = started + Duration::from_secs(seconds);
    let history = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                seed,
                addrs.clone(),
                started,
                stop,
                history.clone(),
            ))
        })
        .collect();
    let injected = faults(&mut nodes, seed, stop).await;
    for client in clients {
        client.await.expect("client task");
    }

    let history = history.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let answered = history.iter().filter(|op| op.completed.is_some()).count();
    let anomalies = check(&history);
    println!(
        "chaos: seed {seed}, {seconds} s, {} operations checked ({answered} answered), {injected} faults injected, {} anomalies",
        history.len(),
        anomalies.len()
    );
    assert!(
        answered > 20,
        "too few operations completed to mean anything"
    );
    assert!(anomalies.is_empty(), "not linearizable: {anomalies:?}");

    // Every node ends with the same state.
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let leader_node = nodes.iter().find(|n| n.id == leader).expect("leader");
    let expected = state_of(leader_node, Consistency::Linearizable)
        .await
        .expect("the leader's state");
    for node in &nodes {
        eventually(
            Duration::from_secs(30),
            "every node to hold the same state",
            || async { (state_of(node, Consistency::Stale).await? == expected).then_some(()) },
        )
        .await;
    }
}

/// Each chaos key's value on `node`.
async fn state_of(node: &ServerNode, consistency: Consistency) -> Option<Vec<Option<String>>> {
    let mut client = node.client().await?;
    let mut values = Vec::new();
    for i in 0..KEYS {
        values.push(read(&mut client, &key(i), consistency).await?);
    }
    Some(values)
}
