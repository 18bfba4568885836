//! Federation benchmark (run on purpose, not by CI): 10 simulated agents
//! stream 10,000 endpoints across 10 clusters into a 3-node control plane
//! over the federation API, then make 1,000 endpoint changes a second for a
//! minute. Prints the time to the first full view, the change-to-commit
//! latency (p50, p99) and the Raft entries per second that carried them.
//!
//! `cargo run -p meridian-tests --bin meridian-federation-bench -- [SECONDS] [CHANGES_PER_SECOND]`

use meridian_proto::v1::{
    federation_client::FederationClient, sync_request::Message, Batch, EndpointSet, Hello,
    StatusRequest, SyncRequest,
};
use meridian_tests::{agreed_leader, cli, percentile, start_cluster, ServerOptions};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const CLUSTERS: usize = 10;
const SERVICES: usize = 100;
const PER_SET: usize = 10;
/// How long an agent gathers changes before sending them (meridian-agent's default).
const BATCH_INTERVAL: Duration = Duration::from_millis(100);

fn set(service: usize, cluster: usize, generation: usize) -> EndpointSet {
    let endpoints: Vec<serde_json::Value> = (0..PER_SET)
        .map(|i| serde_json::json!({"address": format!("10.{cluster}.{service}.{i}"), "port": 8080 + generation % 1000}))
        .collect();
    EndpointSet {
        namespace: "bench".into(),
        name: format!("s{service}"),
        spec_json: serde_json::json!({ "endpoints": endpoints }).to_string(),
    }
}

/// One simulated agent: a snapshot, then a batch every interval with the
/// changes that arrived meanwhile. Returns (snapshot latency, per-change commit latencies).
async fn agent(
    addr: String,
    cluster: usize,
    seconds: u64,
    changes_per_second: usize,
) -> (Duration, Vec<Duration>) {
    let mut client = FederationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(16);
    let hello = Hello {
        cluster: format!("c{cluster}"),
        agent_id: format!("bench-{cluster}"),
    };
    tx.send(SyncRequest {
        message: Some(Message::Hello(hello)),
    })
    .await
    .expect("send");
    let mut replies = client
        .sync(ReceiverStream::new(rx))
        .await
        .expect("sync")
        .into_inner();
    let started = Instant::now();
    let snapshot = Batch {
        seq: 1,
        full_snapshot: true,
        upserts: (0..SERVICES).map(|s| set(s, cluster, 0)).collect(),
        removals: vec![],
        trace: String::new(),
        observed_unix_ms: 0,
    };
    tx.send(SyncRequest {
        message: Some(Message::Batch(snapshot)),
    })
    .await
    .expect("send");
    replies.message().await.expect("ack").expect("ack");
    let snapshot_latency = started.elapsed();

    // Changes arrive evenly; each batch carries those that arrived since the last.
    let per_agent = changes_per_second / CLUSTERS;
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut latencies = Vec::new();
    let mut seq = 1;
    let mut generation = 0;
    let mut pending: Vec<Instant> = Vec::new();
    let mut next_change = Instant::now();
    let gap = Duration::from_secs(1) / per_agent.max(1) as u32;
    while Instant::now() < end {
        tokio::time::sleep(BATCH_INTERVAL).await;
        while next_change <= Instant::now() {
            pending.push(next_change);
            next_change += gap;
        }
        if pending.is_empty() {
            continue;
        }
        seq += 1;
        let upserts = pending
            .iter()
            .map(|_| {
                generation += 1;
                set(generation % SERVICES, cluster, generation)
            })
            .collect();
        let batch = Batch {
            seq,
            full_snapshot: false,
            upserts,
            removals: vec![],
            trace: String::new(),
            observed_unix_ms: 0,
        };
        tx.send(SyncRequest {
            message: Some(Message::Batch(batch)),
        })
        .await
        .expect("send");
        replies.message().await.expect("ack").expect("ack");
        let committed = Instant::now();
        latencies.extend(pending.drain(..).map(|t| committed - t));
    }
    (snapshot_latency, latencies)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let rate: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = start_cluster(root.path(), 3, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let clusters: Vec<String> = (0..CLUSTERS)
        .map(|c| {
            format!(
                "kind: Cluster\nmetadata: {{name: c{c}}}\nspec: {{region: r{}}}\n",
                c % 3
            )
        })
        .collect();
    assert!(
        cli(
            &nodes[0].grpc,
            &["apply", "-f", "-"],
            Some(&clusters.join("---\n"))
        )
        .ok
    );
    let index_before = nodes[0].status().await.expect("status").commit_index;

    let started = Instant::now();
    let agents: Vec<_> = (0..CLUSTERS)
        .map(|c| tokio::spawn(agent(nodes[c % nodes.len()].grpc.clone(), c, seconds, rate)))
        .collect();
    let mut first_view = Duration::ZERO;
    let mut latencies = Vec::new();
    for handle in agents {
        let (snapshot, changes) = handle.await.expect("agent");
        first_view = first_view.max(snapshot);
        latencies.extend(changes);
    }
    let elapsed = started.elapsed();
    let index_after = nodes[0].status().await.expect("status").commit_index;
    latencies.sort();
    let entries = index_after - index_before;
    println!("| endpoints | changes | first full view | change→commit p50 | p99 | Raft entries/s | changes per entry |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} in {seconds} s | {:.2} s | {:.0} ms | {:.0} ms | {:.1} | {:.1} |",
        CLUSTERS * SERVICES * PER_SET,
        latencies.len(),
        first_view.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        entries as f64 / elapsed.as_secs_f64(),
        latencies.len() as f64 / entries.max(1) as f64,
    );
    let _ = StatusRequest {};
}
