//! Where each proxy stands, across a two-node control plane: `get proxies`
//! shows per type the version sent, the version ACKed, how long a proxy has
//! been behind and its last NACK; `status --propagation N` sorts the
//! proxies into those that hold revision N, those that do not yet (a
//! client that stopped answering) and those that rejected it (a client that
//! refuses clusters).

use meridian_tests::{agreed_leader, cli, eventually, start_cluster, xds, ServerOptions};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

const MESH: &str = "kind: Cluster\nmetadata: {name: east}\nspec: {region: us-east-1, zone: us-east-1a}\n---\n\
    kind: Service\nmetadata: {name: web, namespace: shop}\nspec: {protocol: http, port: 8080}\n---\n\
    kind: Endpoints\nmetadata: {name: web, namespace: shop, cluster: east}\nspec: {endpoints: [{address: 10.0.0.1, port: 80}]}\n";

/// A new service and its endpoints: every type changes for every proxy.
const CART: &str = "kind: Service\nmetadata: {name: cart, namespace: shop}\nspec: {protocol: http, port: 9090}\n---\n\
    kind: Endpoints\nmetadata: {name: cart, namespace: shop, cluster: east}\nspec: {endpoints: [{address: 10.0.0.2, port: 80}]}\n";

/// Applies `manifest`; the revision of the change (the highest printed).
fn apply(server: &str, manifest: &str) -> u64 {
    let run = cli(server, &["apply", "-f", "-"], Some(manifest));
    assert!(run.ok, "{}", run.stderr);
    run.stdout
        .lines()
        .filter_map(|l| {
            l.rsplit_once("(revision ")?
                .1
                .strip_suffix(')')?
                .parse()
                .ok()
        })
        .max()
        .expect("apply prints revisions")
}

fn json(server: &str, args: &[&str]) -> Value {
    let run = cli(server, args, None);
    assert!(run.ok, "{args:?}: {}", run.stderr);
    serde_json::from_str(&run.stdout).expect("JSON output")
}

/// The proxies `status --propagation` sorts into each group, by node id.
fn propagation(server: &str, revision: u64) -> (Value, [Vec<String>; 3]) {
    let value = json(
        server,
        &[
            "status",
            "--propagation",
            &revision.to_string(),
            "-o",
            "json",
        ],
    );
    let names = |group: &str| {
        let mut names: Vec<String> = value[group]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p["nodeId"].as_str().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names
    };
    let groups = [names("holding"), names("pending"), names("rejected")];
    (value, groups)
}

fn proxy<'a>(listed: &'a Value, name: &str) -> &'a Value {
    listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|p| p["nodeId"] == name)
        .unwrap_or_else(|| panic!("{name} listed: {listed}"))
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_proxies_and_propagation_show_who_holds_a_revision_who_lags_and_who_refused_it() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = start_cluster(root.path(), 2, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let (one, two) = (nodes[0].grpc.clone(), nodes[1].grpc.clone());
    let first = apply(&one, MESH);

    let current = xds::sotw(&one, xds::node("current", "east"), None, false)
        .await
        .expect("connect current");
    let incremental = xds::delta(&two, xds::node("incremental", "east"))
        .await
        .expect("connect incremental");
    let stalled = xds::sotw(&two, xds::node("stalled", "east"), None, false)
        .await
        .expect("connect stalled");
    let refuser = xds::sotw(&one, xds::node("refuser", "east"), None, true)
        .await
        .expect("connect refuser");

    // Everyone but the refuser holds the first revision, on either node.
    eventually(WAIT, "three proxies to hold the first revision", || async {
        let (_, [holding, pending, rejected]) = propagation(&one, first);
        (holding == strings(&["current", "incremental", "stalled"])
            && pending.is_empty()
            && rejected == strings(&["refuser"]))
        .then_some(())
    })
    .await;

    // One client stops answering; then every type changes.
    stalled.stop_answering();
    let second = apply(&two, CART);
    let (value, groups) = eventually(WAIT, "the second revision to settle", || async {
        let (value, groups) = propagation(&two, second);
        (groups
            == [
                strings(&["current", "incremental"]),
                strings(&["stalled"]),
                strings(&["refuser"]),
            ])
        .then_some((value, groups))
    })
    .await;
    assert!(
        value["unreachableNodes"]
            .as_array()
            .is_some_and(|u| u.is_empty()),
        "{value}"
    );
    assert_eq!(groups[0], strings(&["current", "incremental"]));
    // The first revision is still held by the client that stopped.
    let (_, [holding, _, _]) = propagation(&one, first);
    assert_eq!(holding, strings(&["current", "incremental", "stalled"]));

    // get proxies: per type, what was sent and ACKed, since when behind, the NACK.
    let listed = json(&one, &["get", "proxies", "-o", "json"]);
    let nodes_of: Vec<(String, u64)> = ["current", "incremental", "stalled", "refuser"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                proxy(&listed, n)["controlPlaneNode"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        nodes_of,
        vec![
            ("current".to_string(), 1),
            ("incremental".to_string(), 2),
            ("stalled".to_string(), 2),
            ("refuser".to_string(), 1)
        ]
    );
    for name in ["current", "incremental"] {
        let p = proxy(&listed, name);
        assert!(p["revision"].as_u64().unwrap_or(0) >= second, "{p}");
        for t in ["cds", "eds", "lds", "rds"] {
            let standing = &p["types"][t];
            assert_eq!(
                standing["sentVersion"], standing["ackedVersion"],
                "{name} {t}: {p}"
            );
            assert!(standing["behindSeconds"].is_null(), "{name} {t}: {p}");
            assert!(
                standing["ackedRevision"].as_u64().unwrap_or(0) >= second,
                "{p}"
            );
        }
    }
    let stalled_entry = proxy(&listed, "stalled");
    let cds = &stalled_entry["types"]["cds"];
    assert_ne!(cds["sentVersion"], cds["ackedVersion"], "{stalled_entry}");
    assert!(
        cds["sentRevision"].as_u64().unwrap_or(0) >= second,
        "{stalled_entry}"
    );
    assert!(
        cds["ackedRevision"].as_u64().unwrap_or(u64::MAX) < second,
        "{stalled_entry}"
    );
    assert!(cds["behindSeconds"].as_f64().is_some(), "{stalled_entry}");
    assert!(stalled_entry["revision"].as_u64().unwrap_or(u64::MAX) < second);
    let refused = proxy(&listed, "refuser");
    let cds = &refused["types"]["cds"];
    assert_eq!(cds["rejected"], true, "{refused}");
    assert_eq!(
        cds["lastNack"]["error"], "test client refuses clusters",
        "{refused}"
    );
    assert_eq!(cds["lastNack"]["version"], cds["sentVersion"], "{refused}");
    assert_eq!(
        refused["types"]["lds"]["sentVersion"],
        refused["types"]["lds"]["ackedVersion"]
    );

    // How long the stalled client has been behind grows as it stays silent.
    let behind =
        |listed: &Value| proxy(listed, "stalled")["types"]["cds"]["behindSeconds"].as_f64();
    let earlier = behind(&listed).unwrap_or(0.0);
    eventually(WAIT, "the stalled client's lag to grow", || async {
        let later = behind(&json(&two, &["get", "proxies", "-o", "json"]))?;
        (later > earlier).then_some(())
    })
    .await;

    // The tables say the same.
    let table = cli(
        &one,
        &["status", "--propagation", &second.to_string()],
        None,
    );
    assert!(table.ok, "{}", table.stderr);
    for expected in [
        format!("revision {second}: 2 of 4 proxies hold it, 1 not yet, 1 rejected it"),
        "not ACKed".to_string(),
        "test client refuses clusters".to_string(),
    ] {
        assert!(
            table.stdout.contains(&expected),
            "{expected:?} in:\n{}",
            table.stdout
        );
    }
    let table = cli(&two, &["get", "proxies"], None);
    assert!(table.ok, "{}", table.stderr);
    for expected in [
        "SENT",
        "ACKED",
        "BEHIND",
        "LAST-NACK",
        "(rejected)",
        "stalled",
    ] {
        assert!(
            table.stdout.contains(expected),
            "{expected:?} in:\n{}",
            table.stdout
        );
    }

    // A revision not committed yet is refused, not answered with a guess.
    let future = cli(&one, &["status", "--propagation", "1000000"], None);
    assert!(
        !future.ok && future.stderr.contains("not committed yet"),
        "{}",
        future.stderr
    );
    drop((current, incremental, refuser));
}
