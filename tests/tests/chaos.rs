//! Breaking the control plane on purpose: `meridian server` processes (3 or
//! 5) whose Raft traffic goes through fault-injecting relays, while clients
//! write and read through the admin API (dialling each node directly), an
//! agent streams a changing endpoint set and a proxy carries traffic to it,
//! and a seeded fault loop kills nodes with SIGKILL (then restarts them on
//! their data dirs), pauses them with SIGSTOP longer than the election
//! timeout, isolates the leader with a minority, cuts a node off, cuts
//! single links one way, slows and drops traffic on every link, and cuts the
//! agent and the proxy off from a node. Every operation is recorded with its
//! invocation and completion times and the history is checked for
//! linearizability; the proxy must fail no request; once the network heals
//! every node holds the same state and the agent's last endpoint set, and
//! the proxy routes to that set. A short run of each size is part of CI;
//! `scripts/chaos` runs long ones (MERIDIAN_CHAOS_SECONDS,
//! MERIDIAN_CHAOS_SEED, MERIDIAN_CHAOS_FAULTS).

use meridian_proto::v1::{Consistency, StatusRequest};
use meridian_tests::{
    agreed_leader, endpoints_of, eventually,
    linearizability::{check, Kind, Operation},
    mesh_traffic::{self, MeshTraffic},
    peer_links::{start_cluster_behind_relays, PeerLinks},
    relay::Mode,
    workload::{state_of, Rng, Workload},
    ServerNode, ServerOptions,
};
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

const KEYS: usize = 4;
const CLIENTS: usize = 3;
/// The upstreams behind the proxy; the agent names a changing subset.
const UPSTREAMS: usize = 3;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The faults the loop picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// SIGKILL a node, restart it on its data dir 0.5–1.5 s later.
    Crash,
    /// SIGSTOP a node for 2.5 s (past the 1–2 s election timeout).
    Pause,
    /// The leader (with one follower, in five nodes) cut from the majority.
    IsolateLeader,
    /// Any one node cut from all the others.
    Isolate,
    /// One direction of one link cut, most often leader → follower.
    OneWay,
    /// Every link slowed, losing and resetting some traffic.
    Degrade,
    /// The agent and the proxy cut off from one node (their streams there
    /// reset or go silent).
    MeshLink,
}

impl Fault {
    const ALL: [Fault; 7] = [
        Fault::Crash,
        Fault::Pause,
        Fault::IsolateLeader,
        Fault::Isolate,
        Fault::OneWay,
        Fault::Degrade,
        Fault::MeshLink,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::Crash => "crash",
            Fault::Pause => "pause",
            Fault::IsolateLeader => "isolate-leader",
            Fault::Isolate => "isolate",
            Fault::OneWay => "one-way",
            Fault::Degrade => "degrade",
            Fault::MeshLink => "mesh-link",
        }
    }
}

/// MERIDIAN_CHAOS_FAULTS (`crash,pause,...`), or every fault.
fn faults_setting() -> Vec<Fault> {
    let Ok(names) = std::env::var("MERIDIAN_CHAOS_FAULTS") else {
        return Fault::ALL.to_vec();
    };
    names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            Fault::ALL
                .into_iter()
                .find(|f| f.name() == n)
                .unwrap_or_else(|| panic!("MERIDIAN_CHAOS_FAULTS: no fault '{n}'"))
        })
        .collect()
}

/// The node that believes it leads with the highest term, asked quickly
/// (faults are under way: some nodes do not answer).
async fn believed_leader(nodes: &[ServerNode]) -> Option<u64> {
    let mut best: Option<(u64, u64)> = None;
    for node in nodes.iter().filter(|n| n.is_running()) {
        let asked = async {
            let mut client = node.client().await?;
            client.status(StatusRequest {}).await.ok()
        };
        let Ok(Some(status)) = tokio::time::timeout(Duration::from_millis(500), asked).await else {
            continue;
        };
        let status = status.into_inner();
        if status.state == "leader" && best.is_none_or(|(term, _)| status.term > term) {
            best = Some((status.term, status.node_id));
        }
    }
    best.map(|(_, id)| id)
}

fn partition_mode(rng: &mut Rng) -> Mode {
    if rng.below(2) == 0 {
        Mode::Cut
    } else {
        Mode::Stall
    }
}

/// The faults, one at a time, every couple of seconds, until `stop`; never
/// more than a minority down or cut off, so a quorum remains. Returns how
/// many of each were injected.
async fn inject(
    nodes: &mut [ServerNode],
    links: &PeerLinks,
    mesh: &MeshTraffic,
    kinds: &[Fault],
    seed: u64,
    stop: Instant,
) -> BTreeMap<Fault, usize> {
    let mut rng = Rng(seed);
    let mut injected = BTreeMap::new();
    let ids: Vec<u64> = nodes.iter().map(|n| n.id).collect();
    let count = nodes.len() as u64;
    while Instant::now() + Duration::from_secs(4) < stop {
        tokio::time::sleep(rng.millis(500, 1_500)).await;
        let fault = kinds[rng.below(kinds.len() as u64) as usize];
        let victim = rng.below(count) as usize;
        match fault {
            Fault::Crash => {
                nodes[victim].kill();
                tokio::time::sleep(rng.millis(500, 1_500)).await;
                nodes[victim].start();
            }
            Fault::Pause => {
                nodes[victim].signal("STOP");
                tokio::time::sleep(Duration::from_millis(2_500)).await;
                nodes[victim].signal("CONT");
            }
            Fault::IsolateLeader => {
                let leader = believed_leader(nodes).await.unwrap_or(ids[victim]);
                let mut side = vec![leader];
                if count >= 5 {
                    let others: Vec<u64> = ids.iter().copied().filter(|&i| i != leader).collect();
                    side.push(others[rng.below(others.len() as u64) as usize]);
                }
                links.partition(&side, partition_mode(&mut rng));
                tokio::time::sleep(rng.millis(2_000, 4_000)).await;
                links.heal();
            }
            Fault::Isolate => {
                links.isolate(ids[victim], partition_mode(&mut rng));
                tokio::time::sleep(rng.millis(2_000, 4_000)).await;
                links.heal();
            }
            Fault::OneWay => {
                let from = match believed_leader(nodes).await {
                    Some(leader) if rng.below(4) != 0 => leader,
                    _ => ids[victim],
                };
                let others: Vec<u64> = ids.iter().copied().filter(|&i| i != from).collect();
                let to = others[rng.below(others.len() as u64) as usize];
                links.set_mode(from, to, partition_mode(&mut rng));
                tokio::time::sleep(rng.millis(2_000, 4_000)).await;
                links.heal();
            }
            Fault::Degrade => {
                let latency = rng.millis(10, 100);
                let loss = 50 + rng.below(150) as u32;
                let reset = rng.below(20) as u32;
                links.degrade(latency, loss, reset);
                tokio::time::sleep(rng.millis(2_000, 4_000)).await;
                links.heal();
            }
            Fault::MeshLink => {
                let link = &mesh.links[victim];
                link.set_mode(partition_mode(&mut rng));
                tokio::time::sleep(rng.millis(2_000, 4_000)).await;
                link.set_mode(Mode::Open);
            }
        }
        *injected.entry(fault).or_default() += 1;
    }
    injected
}

/// One seeded run: `count` nodes, clients and faults for the run's length,
/// then the checks.
async fn run(count: u64, default_seconds: u64, default_seed: u64) {
    let seconds = setting("MERIDIAN_CHAOS_SECONDS", default_seconds);
    let seed = setting("MERIDIAN_CHAOS_SEED", default_seed);
    let kinds = faults_setting();
    let root = tempfile::tempdir().expect("temp dir");
    let (mut nodes, links) =
        start_cluster_behind_relays(root.path(), count, ServerOptions::default(), seed);
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    let mut mesh = MeshTraffic::start(root.path(), &addrs, UPSTREAMS).await;

    let started = Instant::now();
    let stop = started + Duration::from_secs(seconds);
    // MERIDIAN_CHAOS_READS=stale checks the checker: stale reads must be caught.
    let reads = match std::env::var("MERIDIAN_CHAOS_READS").as_deref() {
        Ok("stale") => Consistency::Stale,
        _ => Consistency::Linearizable,
    };
    let workload = Workload::start_reading(CLIENTS, KEYS, seed, addrs, (started, stop), reads);
    mesh.drive(seed, stop);
    let injected = inject(&mut nodes, &links, &mesh, &kinds, seed, stop).await;
    let history = workload.finish().await;
    let (requests, changes, final_ports) = mesh.finish().await;
    links.heal();

    let answered = history.iter().filter(|op| op.completed.is_some()).count();
    let anomalies = check(&history);
    let faults: Vec<String> = injected
        .iter()
        .map(|(fault, n)| format!("{} {n}", fault.name()))
        .collect();
    println!(
        "chaos: {count} nodes, seed {seed}, {seconds} s, {} operations checked ({answered} answered), {} faults injected ({}), {} anomalies; proxy: {} requests, {} failed ({:.1} per 10k), endpoint set changed {changes} times",
        history.len(),
        injected.values().sum::<usize>(),
        faults.join(", "),
        anomalies.len(),
        requests.sent,
        requests.failed,
        requests.failed_per_10k(),
    );
    assert!(
        answered > 20,
        "too few operations completed to mean anything"
    );
    if !anomalies.is_empty() {
        let kept = keep_history(&history, &format!("{count}-nodes-seed-{seed}"));
        panic!("not linearizable: {anomalies:?} (history in {kept})");
    }
    // Control-plane faults never reach the data plane: every upstream the
    // proxy may pick is up, so every request answers.
    assert!(requests.sent > 100, "too few requests: {requests:?}");
    assert_eq!(
        requests.failed, 0,
        "the proxy failed requests: {requests:?}"
    );

    // Healed, every node ends with the same state.
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let leader_node = nodes.iter().find(|n| n.id == leader).expect("leader");
    let expected = eventually(Duration::from_secs(30), "the leader's state", || {
        state_of(leader_node, KEYS, Consistency::Linearizable)
    })
    .await;
    for node in &nodes {
        eventually(
            Duration::from_secs(30),
            "every node to hold the same state",
            || async {
                (state_of(node, KEYS, Consistency::Stale).await? == expected).then_some(())
            },
        )
        .await;
    }
    // The agent's last endpoint set, whatever node it ended on, is what every
    // node holds (no stale endpoints from a batch of an older stream) and
    // what the proxy routes to.
    let expected: Vec<String> = final_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    for node in &nodes {
        eventually(
            Duration::from_secs(30),
            "every node to hold the agent's last endpoint set",
            || async {
                let held = endpoints_of(node, "shop", "web", mesh_traffic::CLUSTER).await?;
                let addrs: Vec<String> = held
                    .iter()
                    .filter_map(|e| e.split(' ').next().map(str::to_string))
                    .collect();
                (addrs == expected).then_some(())
            },
        )
        .await;
    }
    let wanted: BTreeSet<String> = mesh.names_of(&final_ports).into_iter().collect();
    let client = meridian_tests::proxy::client();
    eventually(
        Duration::from_secs(30),
        "the proxy to route to the last endpoint set only",
        || async {
            let mut answered = BTreeSet::new();
            for _ in 0..(4 * UPSTREAMS) {
                let (status, body) =
                    meridian_tests::proxy::get(&client, &mesh.proxy_addr, "web.shop", "/").await?;
                if status != 200 {
                    return None;
                }
                answered.insert(body);
            }
            answered.is_subset(&wanted).then_some(())
        },
    )
    .await;
}

/// Writes `history` where it outlives the test, one operation a line
/// (key, kind, value, invoked, completed in ns); returns the path.
fn keep_history(history: &[Operation], name: &str) -> String {
    let path = std::env::temp_dir().join(format!("meridian-chaos-{name}.history"));
    let lines: Vec<String> = history
        .iter()
        .map(|op| {
            let (kind, value) = match &op.kind {
                Kind::Write(v) => ("write", Some(v.as_str())),
                Kind::Read(v) => ("read", v.as_deref()),
            };
            let completed = op.completed.map_or("-".to_string(), |c| c.to_string());
            format!(
                "{} {kind} {} {} {completed}",
                op.key,
                value.unwrap_or("-"),
                op.invoked
            )
        })
        .collect();
    match std::fs::write(&path, lines.join("\n")) {
        Ok(()) => path.display().to_string(),
        Err(e) => format!("nowhere: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_under_crashes_pauses_and_partitions_stay_linearizable() {
    run(3, 15, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_under_crashes_pauses_and_partitions_stay_linearizable() {
    run(5, 15, 5).await;
}
