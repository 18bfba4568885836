//! Membership changes while the network and the nodes misbehave, with
//! clients writing and reading throughout: a learner added and promoted
//! while a founder is cut off, a follower removed (and left running a while)
//! during a one-way cut, a node replaced (a new voter added, an old one
//! removed) while another is paused, and a node whose data dir is wiped
//! rejoining under a new id at its old address, through the CLI as an
//! operator would. Checked: the clients' history is linearizable (no
//! acknowledged write lost), the membership ends as planned, and every
//! member converges on the same state.

use meridian_proto::v1::{
    admin_client::AdminClient, AddLearnerRequest, Consistency, PromoteMemberRequest,
    RemoveMemberRequest,
};
use meridian_tests::{
    agreed_leader, cli, eventually,
    linearizability::check,
    peer_links::PeerLinks,
    relay::Mode,
    workload::{state_of, Workload},
    ServerNode, ServerOptions,
};
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};
use tonic::transport::Channel;

const KEYS: usize = 4;
const CLIENTS: usize = 3;
const WAIT: Duration = Duration::from_secs(30);
/// Founders 1–3; 4 and 5 join later; 6 is node 3 wiped and reborn.
const FOUNDERS: u64 = 3;
const REBORN: u64 = 6;
const WIPED: u64 = 3;

/// A membership change, retried on any node until one accepts it: under
/// faults a call may time out after it took effect, so a refusal saying it
/// is already done (`done`) is success too.
async fn change(
    nodes: &[&ServerNode],
    what: &str,
    done: &str,
    call: impl Fn(AdminClient<Channel>) -> Call,
) {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        for node in nodes.iter().filter(|n| n.is_running()) {
            let Some(client) = node.client().await else {
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(15), call(client)).await {
                Ok(Ok(())) => return,
                Ok(Err(status)) if status.message().contains(done) => return,
                Ok(Err(status)) => last = status.message().to_string(),
                Err(_) => last = "timed out".into(),
            }
            if !last.is_empty() {
                eprintln!("membership: {what} through node {}: {last}", node.id);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} did not go through in {WAIT:?}: {last}");
}

type Call = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), tonic::Status>> + Send>>;

fn add_learner(id: u64, addr: String) -> impl Fn(AdminClient<Channel>) -> Call {
    move |mut client| {
        let addr = addr.clone();
        Box::pin(async move {
            client
                .add_learner(AddLearnerRequest { node_id: id, addr })
                .await
                .map(|_| ())
        })
    }
}

fn promote(id: u64) -> impl Fn(AdminClient<Channel>) -> Call {
    move |mut client| {
        Box::pin(async move {
            client
                .promote_member(PromoteMemberRequest { node_id: id })
                .await
                .map(|_| ())
        })
    }
}

fn remove(id: u64) -> impl Fn(AdminClient<Channel>) -> Call {
    move |mut client| {
        Box::pin(async move {
            client
                .remove_member(RemoveMemberRequest { node_id: id })
                .await
                .map(|_| ())
        })
    }
}

/// The voters every node in `nodes` reports, once they all agree.
async fn voters(nodes: &[&ServerNode]) -> BTreeSet<u64> {
    eventually(WAIT, "the members to agree on the voters", || async {
        let mut agreed = None;
        for node in nodes {
            let status = node.status().await?;
            let voters: BTreeSet<u64> = status
                .members
                .iter()
                .filter(|m| m.role == "voter")
                .map(|m| m.node_id)
                .collect();
            if agreed.as_ref().is_some_and(|a| *a != voters) {
                return None;
            }
            agreed = Some(voters);
        }
        agreed
    })
    .await
}

fn find(nodes: &[ServerNode], id: u64) -> &ServerNode {
    nodes.iter().find(|n| n.id == id).expect("a planned node")
}

fn members<'a>(nodes: &'a [ServerNode], ids: &BTreeSet<u64>) -> Vec<&'a ServerNode> {
    nodes.iter().filter(|n| ids.contains(&n.id)).collect()
}

fn without(ids: &BTreeSet<u64>, id: u64) -> BTreeSet<u64> {
    ids.iter().copied().filter(|&i| i != id).collect()
}

fn addrs(nodes: &[ServerNode], ids: &BTreeSet<u64>) -> Vec<String> {
    members(nodes, ids).iter().map(|n| n.grpc.clone()).collect()
}

/// Runs `cli` off the runtime's threads (it blocks), panicking on failure.
async fn operator(server: String, args: &[&str]) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&server, &args, None)
    })
    .await
    .expect("the CLI ran");
    assert!(run.ok, "meridian {}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_under_faults_lose_no_acknowledged_write() {
    let root = tempfile::tempdir().expect("temp dir");
    let seed = 11;
    // Every node there will ever be, so the relays between them exist from
    // the start; the reborn node takes the wiped node's address and data dir.
    let mut planned: Vec<ServerNode> = (1..=REBORN)
        .map(|id| ServerNode::new(root.path(), id, ServerOptions::default()))
        .collect();
    let (wiped_grpc, wiped_http, wiped_dir) = {
        let wiped = &planned[(WIPED - 1) as usize];
        (
            wiped.grpc.clone(),
            wiped.http.clone(),
            wiped.data_dir.clone(),
        )
    };
    let reborn = &mut planned[(REBORN - 1) as usize];
    reborn.grpc = wiped_grpc.clone();
    reborn.http = wiped_http;
    reborn.data_dir = wiped_dir.clone();
    let links = PeerLinks::new(&planned.iter().collect::<Vec<_>>(), seed);
    let founders = ServerNode::initial_cluster(&planned.iter().take(3).collect::<Vec<_>>());
    let mut nodes: Vec<ServerNode> = planned
        .into_iter()
        .map(|n| {
            let args = links.args_for(n.id);
            let n = n.with_args(args);
            if n.id <= FOUNDERS {
                n.with_initial_cluster(&founders)
            } else {
                n
            }
        })
        .collect();
    for node in nodes.iter_mut().take(FOUNDERS as usize) {
        node.start();
    }
    let mut voting: BTreeSet<u64> = (1..=FOUNDERS).collect();
    agreed_leader(&members(&nodes, &voting)).await;

    let started = Instant::now();
    // Long enough for every step; the clients stop at the deadline or when told.
    let stop = started + Duration::from_secs(120);
    let workload = Workload::start(CLIENTS, KEYS, seed, addrs(&nodes, &voting), started, stop);

    // 1. A learner added and promoted while a founder is cut off.
    let leader = agreed_leader(&members(&nodes, &voting)).await;
    let cut = *voting.iter().find(|&&id| id != leader).expect("a follower");
    links.isolate(cut, Mode::Cut);
    nodes[3].start();
    // Asked through the nodes an operator could reach; one of them follows.
    let reachable = members(&nodes, &without(&voting, cut));
    change(
        &reachable,
        "adding node 4 as a learner",
        "already a voter",
        add_learner(4, nodes[3].grpc.clone()),
    )
    .await;
    change(
        &reachable,
        "promoting node 4",
        "already a voter",
        promote(4),
    )
    .await;
    links.heal();
    voting.insert(4);
    assert_eq!(voters(&members(&nodes, &voting)).await, voting);
    workload.set_targets(addrs(&nodes, &voting));

    // 2. A follower removed during a one-way cut from the leader, and left
    // running a while: a removed node must not disrupt the others.
    let leader = agreed_leader(&members(&nodes, &voting)).await;
    let removed = *voting
        .iter()
        .find(|&&id| id != leader && id != WIPED)
        .expect("a follower to remove");
    let other = *voting
        .iter()
        .find(|&&id| id != leader && id != removed)
        .expect("another follower");
    links.set_mode(leader, other, Mode::Stall);
    voting.remove(&removed);
    workload.set_targets(addrs(&nodes, &voting));
    change(
        &members(&nodes, &voting),
        &format!("removing node {removed}"),
        "is not a member",
        remove(removed),
    )
    .await;
    links.heal();
    assert_eq!(voters(&members(&nodes, &voting)).await, voting);
    tokio::time::sleep(Duration::from_secs(3)).await;
    nodes[(removed - 1) as usize].kill();

    // 3. A node replaced, new voter first, while another member is paused.
    let leader = agreed_leader(&members(&nodes, &voting)).await;
    let replaced = *voting
        .iter()
        .find(|&&id| id != leader && id != WIPED)
        .expect("a follower to replace");
    let paused = *voting
        .iter()
        .find(|&&id| id != replaced && id != leader)
        .expect("a member to pause");
    nodes[4].start();
    nodes[(paused - 1) as usize].signal("STOP");
    change(
        &members(&nodes, &without(&voting, paused)),
        "adding node 5",
        "already a voter",
        add_learner(5, nodes[4].grpc.clone()),
    )
    .await;
    nodes[(paused - 1) as usize].signal("CONT");
    change(
        &members(&nodes, &voting),
        "promoting node 5",
        "already a voter",
        promote(5),
    )
    .await;
    voting.insert(5);
    voting.remove(&replaced);
    workload.set_targets(addrs(&nodes, &voting));
    change(
        &members(&nodes, &voting),
        &format!("removing node {replaced}"),
        "is not a member",
        remove(replaced),
    )
    .await;
    nodes[(replaced - 1) as usize].kill();
    assert_eq!(voters(&members(&nodes, &voting)).await, voting);

    // 4. Node 3's data dir wiped; it comes back as node 6 at the same
    // address, the way an operator would do it, with the CLI.
    voting.remove(&WIPED);
    workload.set_targets(addrs(&nodes, &voting));
    nodes[(WIPED - 1) as usize].kill();
    std::fs::remove_dir_all(&wiped_dir).expect("wipe the data dir");
    let survivor = find(&nodes, *voting.iter().next().expect("a voter"))
        .grpc
        .clone();
    operator(survivor.clone(), &["members", "remove", &WIPED.to_string()]).await;
    nodes[(REBORN - 1) as usize].start();
    operator(
        survivor,
        &[
            "members",
            "add",
            &REBORN.to_string(),
            &wiped_grpc,
            "--voter",
        ],
    )
    .await;
    voting.insert(REBORN);
    workload.set_targets(addrs(&nodes, &voting));
    assert_eq!(voters(&members(&nodes, &voting)).await, voting);

    // A little more traffic on the final membership, then the checks.
    let elapsed = started.elapsed();
    let history = tokio::time::timeout(
        stop.saturating_duration_since(Instant::now()) + WAIT,
        async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            workload.finish_now().await
        },
    )
    .await
    .expect("the clients stopped");
    let answered = history.iter().filter(|op| op.completed.is_some()).count();
    let anomalies = check(&history);
    println!(
        "membership: {:.0} s, {} operations checked ({answered} answered), final voters {voting:?}, {} anomalies",
        elapsed.as_secs_f64(),
        history.len(),
        anomalies.len()
    );
    assert!(
        answered > 20,
        "too few operations completed to mean anything"
    );
    assert!(anomalies.is_empty(), "not linearizable: {anomalies:?}");

    let final_members = members(&nodes, &voting);
    let leader = agreed_leader(&final_members).await;
    let expected = eventually(WAIT, "the leader's state", || {
        state_of(find(&nodes, leader), KEYS, Consistency::Linearizable)
    })
    .await;
    for node in &final_members {
        eventually(WAIT, "every member to hold the same state", || async {
            (state_of(node, KEYS, Consistency::Stale).await? == expected).then_some(())
        })
        .await;
    }
}

/// Regression: a membership change sent to a follower whose copy of the
/// membership lags was judged against that copy and refused ("node 4 is
/// not a member; add it as a learner first") instead of going to the
/// leader, so `members add 4 ADDR --voter` through a follower could fail
/// halfway. The leader's heartbeats to one follower are delayed here by a
/// second, so that follower keeps its leader but lags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_through_a_lagging_follower_goes_to_the_leader() {
    let root = tempfile::tempdir().expect("temp dir");
    let planned: Vec<ServerNode> = (1..=4)
        .map(|id| ServerNode::new(root.path(), id, ServerOptions::default()))
        .collect();
    let links = PeerLinks::new(&planned.iter().collect::<Vec<_>>(), 3);
    let founders = ServerNode::initial_cluster(&planned.iter().take(3).collect::<Vec<_>>());
    let mut nodes: Vec<ServerNode> = planned
        .into_iter()
        .map(|n| {
            let args = links.args_for(n.id);
            let n = n.with_args(args);
            if n.id <= 3 {
                n.with_initial_cluster(&founders)
            } else {
                n
            }
        })
        .collect();
    for node in &mut nodes {
        node.start();
    }
    let founders: Vec<&ServerNode> = nodes.iter().take(3).collect();
    let leader = agreed_leader(&founders).await;
    let lagging = founders
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower")
        .id;
    links
        .link(leader, lagging)
        .set(meridian_tests::relay::Faults {
            latency: Duration::from_secs(1),
            ..meridian_tests::relay::Faults::OPEN
        });
    let mut at_leader = find(&nodes, leader).client().await.expect("leader");
    at_leader
        .add_learner(AddLearnerRequest {
            node_id: 4,
            addr: nodes[3].grpc.clone(),
        })
        .await
        .expect("node 4 added as a learner");
    let mut at_lagging = find(&nodes, lagging).client().await.expect("follower");
    let promoted = at_lagging
        .promote_member(PromoteMemberRequest { node_id: 4 })
        .await;
    assert!(
        promoted.is_ok(),
        "promoting through node {lagging}: {:?}",
        promoted.err()
    );
    links.heal();
    let all: Vec<&ServerNode> = nodes.iter().collect();
    assert_eq!(voters(&all).await, BTreeSet::from([1, 2, 3, 4]));
}
