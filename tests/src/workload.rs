//! The clients of the fault tests: seeded random reads and writes of a few
//! keys (`Cluster` objects, the value in `spec.region`) through the admin
//! API, each on a random node, every operation recorded with its invocation
//! and completion times for the linearizability checker.

use crate::{
    linearizability::{Kind, Operation},
    ServerNode,
};
use meridian_proto::v1::{
    admin_client::AdminClient, Consistency, GetRequest, PutRequest, ResourceKey,
};
use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A client gives up on one operation after this long (its outcome is then unknown).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);

/// A small seeded generator (xorshift64*), so a run can be repeated.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A duration between `low` and `high` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low + 1))
    }
}

pub fn key(i: usize) -> String {
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

/// Clients running until a deadline, and what they did.
pub struct Workload {
    history: Arc<Mutex<Vec<Operation>>>,
    targets: Arc<Mutex<Vec<String>>>,
    stopped: Arc<AtomicBool>,
    clients: Vec<JoinHandle<()>>,
}

impl Workload {
    /// `clients` clients on `keys` keys against the nodes at `targets` until
    /// `stop`; times are counted from `started`. Reads are linearizable.
    pub fn start(
        clients: usize,
        keys: usize,
        seed: u64,
        targets: Vec<String>,
        started: Instant,
        stop: Instant,
    ) -> Workload {
        Self::start_reading(
            clients,
            keys,
            seed,
            targets,
            (started, stop),
            Consistency::Linearizable,
        )
    }

    /// Like [`Workload::start`], reading with `reads` (`Stale`: to check that
    /// the checker catches what stale reads do).
    pub fn start_reading(
        clients: usize,
        keys: usize,
        seed: u64,
        targets: Vec<String>,
        (started, stop): (Instant, Instant),
        reads: Consistency,
    ) -> Workload {
        let history = Arc::new(Mutex::new(Vec::new()));
        let targets = Arc::new(Mutex::new(targets));
        let stopped = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|id| {
                let client = Client {
                    id,
                    keys,
                    seed: seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    targets: targets.clone(),
                    started,
                    stop,
                    reads,
                    stopped: stopped.clone(),
                    history: history.clone(),
                };
                tokio::spawn(client.run())
            })
            .collect();
        Workload {
            history,
            targets,
            stopped,
            clients,
        }
    }

    /// From now on the clients pick among these nodes.
    pub fn set_targets(&self, targets: Vec<String>) {
        *self.targets.lock().unwrap_or_else(|p| p.into_inner()) = targets;
    }

    /// Stops the clients before their deadline (each finishes the
    /// operation under way); the history.
    pub async fn finish_now(self) -> Vec<Operation> {
        self.stopped.store(true, Ordering::Relaxed);
        self.finish().await
    }

    /// Waits for the clients to reach their deadline; the history.
    pub async fn finish(self) -> Vec<Operation> {
        for client in self.clients {
            client.await.expect("client task");
        }
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.clone()
    }
}

/// One client: random reads and writes of random keys on random nodes
/// until `stop` (or `stopped`), recorded into `history`.
struct Client {
    id: usize,
    keys: usize,
    seed: u64,
    targets: Arc<Mutex<Vec<String>>>,
    started: Instant,
    stop: Instant,
    reads: Consistency,
    stopped: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Operation>>>,
}

impl Client {
    async fn run(self) {
        let mut rng = Rng(self.seed);
        let mut written = 0u64;
        // Bounded by `stop`, and each operation by OPERATION_TIMEOUT.
        while Instant::now() < self.stop && !self.stopped.load(Ordering::Relaxed) {
            let key = key(rng.below(self.keys as u64) as usize);
            let node = {
                let targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
                targets[rng.below(targets.len() as u64) as usize].clone()
            };
            let value = (rng.below(2) == 0).then(|| {
                written += 1;
                format!("c{}-v{written}", self.id)
            });
            let invoked = self.started.elapsed().as_nanos() as u64;
            let outcome = tokio::time::timeout(
                OPERATION_TIMEOUT,
                operate(&node, &key, value.as_deref(), self.reads),
            )
            .await
            .ok()
            .flatten();
            let completed = self.started.elapsed().as_nanos() as u64;
            let (kind, completed) = match (outcome, value) {
                (Some(kind), _) => (kind, Some(completed)),
                // A write without an answer may or may not have happened.
                (None, Some(value)) => (Kind::Write(value), None),
                // A read without an answer says nothing.
                (None, None) => continue,
            };
            self.history
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
}

/// One client's operation against `node`: `Some(kind)` with what it saw, or
/// `None` if no answer came.
async fn operate(node: &str, key: &str, write: Option<&str>, reads: Consistency) -> Option<Kind> {
    let channel = meridian_identity::tls::Dialer::insecure()
        .connect(node)
        .await
        .ok()?;
    let mut client = AdminClient::new(channel);
    match write {
        Some(value) => {
            let request = PutRequest {
                manifest_json: manifest(key, value),
                expected_revision: None,
            };
            client.put(request).await.ok()?;
            Some(Kind::Write(value.to_string()))
        }
        None => read(&mut client, key, reads).await.map(Kind::Read),
    }
}

/// A key's value as `client`'s node reads it: `Some(None)` when absent,
/// `None` when the read failed.
pub async fn read(
    client: &mut AdminClient<Channel>,
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

/// Each of the first `keys` keys' value on `node`.
pub async fn state_of(
    node: &ServerNode,
    keys: usize,
    consistency: Consistency,
) -> Option<Vec<Option<String>>> {
    let mut client = node.client().await?;
    let mut values = Vec::new();
    for i in 0..keys {
        values.push(read(&mut client, &key(i), consistency).await?);
    }
    Some(values)
}
