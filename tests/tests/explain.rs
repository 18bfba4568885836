//! `meridian explain` against a real control plane and a real
//! meridian-proxy: for a two-cluster failover policy it shows the local
//! tier taking all the traffic, then, as the local endpoints become
//! unhealthy, the shares moving to the next tier, and the proxy's traffic
//! moving with them.

use meridian_tests::{
    cli, eventually, free_port,
    proxy::{self, control_plane, endpoints, routed_proxy, spread, WAIT},
    upstream::UpstreamProcess,
};
use serde_json::Value;

/// Clusters east and west, web.shop on `port`, east's endpoints with the
/// given health and west's healthy, and a failover order east then west.
fn mesh(port: u16, east: &[(u16, &str)], west: &[u16]) -> String {
    let east: Vec<(u16, u32, &str)> = east.iter().map(|(p, h)| (*p, 1, *h)).collect();
    let west: Vec<(u16, u32, &str)> = west.iter().map(|p| (*p, 1, "healthy")).collect();
    format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1, zone: us-east-1a}}\n---\n\
         kind: Cluster\nmetadata: {{name: west}}\nspec: {{region: us-west-2, zone: us-west-2a}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}}}\n---\n\
         {}---\n{}---\n\
         kind: FailoverPolicy\nmetadata: {{name: web-order, namespace: shop}}\nspec: {{service: shop/web, order: [east, west]}}\n",
        endpoints("east", "us-east-1a", &east),
        endpoints("west", "us-west-2a", &west),
    )
}

fn explain(cp: &str, cluster: &str) -> Value {
    let run = cli(
        cp,
        &[
            "explain",
            "web",
            "-n",
            "shop",
            "--cluster",
            cluster,
            "-o",
            "json",
        ],
        None,
    );
    assert!(run.ok, "{}", run.stderr);
    serde_json::from_str(&run.stdout).expect("explain prints JSON")
}

/// Each tier of the one backend: (clusters, share in percent rounded, healths).
fn tiers(explained: &Value) -> Vec<(Vec<String>, i64, Vec<String>)> {
    let backends = explained["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 1, "{explained}");
    backends[0]["tiers"]
        .as_array()
        .expect("tiers")
        .iter()
        .map(|tier| {
            let localities = tier["localities"].as_array().expect("localities");
            let clusters = localities
                .iter()
                .map(|l| l["cluster"].as_str().unwrap_or_default().to_string())
                .collect();
            let healths = localities
                .iter()
                .flat_map(|l| l["endpoints"].as_array().cloned().unwrap_or_default())
                .map(|e| e["health"].as_str().unwrap_or_default().to_string())
                .collect();
            let share = tier["sharePercent"].as_f64().expect("share").round() as i64;
            (clusters, share, healths)
        })
        .collect()
}

fn tier(clusters: &[&str], share: i64, healths: &[&str]) -> (Vec<String>, i64, Vec<String>) {
    (
        clusters.iter().map(|c| c.to_string()).collect(),
        share,
        healths.iter().map(|h| h.to_string()).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_tiers_and_shares_before_and_after_the_local_endpoints_fail() {
    let root = tempfile::tempdir().expect("temp dir");
    let nodes = control_plane(root.path()).await;
    let cp = nodes[0].grpc.clone();
    let e1 = UpstreamProcess::start(root.path(), "e1").await;
    let e2 = UpstreamProcess::start(root.path(), "e2").await;
    let w1 = UpstreamProcess::start(root.path(), "w1").await;
    let port = free_port();
    let healthy = mesh(
        port,
        &[(e1.port, "healthy"), (e2.port, "healthy")],
        &[w1.port],
    );
    let (_proxy, addr) = routed_proxy(root.path(), &cp, "proxy-explain", &healthy, port).await;

    // All healthy: east, the proxy's own zone, takes everything.
    let before = explain(&cp, "east");
    assert_eq!(before["service"], "shop/web");
    assert_eq!(before["proxy"]["zone"], "us-east-1a");
    let backend = &before["backends"][0];
    assert_eq!(backend["failoverPolicy"], "shop/web-order");
    assert_eq!(
        backend["failoverOrder"],
        serde_json::json!(["east", "west"])
    );
    assert_eq!(backend["overprovisioningFactor"], 1.4);
    assert_eq!(
        tiers(&before),
        vec![
            tier(&["east"], 100, &["healthy", "healthy"]),
            tier(&["west"], 0, &["healthy"])
        ]
    );
    assert_eq!(
        backend["tiers"][0]["localities"][0]["reason"],
        "the proxy's zone"
    );
    assert_eq!(
        backend["tiers"][1]["localities"][0]["reason"],
        "failover order 2 of 2 (west)"
    );
    let client = proxy::client();
    let counts = spread(&client, &addr, 20).await;
    assert_eq!(
        counts.get("e1").unwrap_or(&0) + counts.get("e2").unwrap_or(&0),
        20,
        "the proxy does as explained: {counts:?}"
    );
    // West's proxies see the same two tiers the other way round.
    assert_eq!(
        tiers(&explain(&cp, "west")),
        vec![
            tier(&["west"], 100, &["healthy"]),
            tier(&["east"], 0, &["healthy", "healthy"])
        ]
    );

    // One local endpoint unhealthy: east is 50% healthy, 70% with the
    // factor of 1.4, and the rest spills to west.
    let half = mesh(
        port,
        &[(e1.port, "healthy"), (e2.port, "unhealthy")],
        &[w1.port],
    );
    assert!(cli(&cp, &["apply", "-f", "-"], Some(&half)).ok);
    let shares = eventually(WAIT, "explain to show the spill", || async {
        let explained = explain(&cp, "east");
        (tiers(&explained)[0].2 == ["healthy", "unhealthy"]).then_some(tiers(&explained))
    })
    .await;
    assert_eq!(
        shares,
        vec![
            tier(&["east"], 70, &["healthy", "unhealthy"]),
            tier(&["west"], 30, &["healthy"])
        ]
    );

    // Every local endpoint unhealthy: all of it goes to west, and the proxy's traffic with it.
    let dead = mesh(
        port,
        &[(e1.port, "unhealthy"), (e2.port, "unhealthy")],
        &[w1.port],
    );
    assert!(cli(&cp, &["apply", "-f", "-"], Some(&dead)).ok);
    let after = eventually(WAIT, "explain to show west taking over", || async {
        let explained = explain(&cp, "east");
        (tiers(&explained)[0].1 == 0).then_some(explained)
    })
    .await;
    assert_eq!(
        tiers(&after),
        vec![
            tier(&["east"], 0, &["unhealthy", "unhealthy"]),
            tier(&["west"], 100, &["healthy"])
        ]
    );
    eventually(WAIT, "the proxy's traffic to move to west", || async {
        let counts = spread(&client, &addr, 20).await;
        (counts.get("w1") == Some(&20)).then_some(())
    })
    .await;

    // The table says the same, with the reasons.
    let table = cli(
        &cp,
        &[
            "explain",
            "shop/web",
            "--cluster",
            "east",
            "--zone",
            "us-east-1b",
        ],
        None,
    );
    assert!(table.ok, "{}", table.stderr);
    for expected in [
        "shop/web for a proxy in cluster east (us-east-1/us-east-1a)",
        "failover policy shop/web-order: east, west; overprovisioning factor 1.4",
        "the proxy's zone",
        "failover order 2 of 2 (west)",
        "100.0%",
        "unhealthy",
        "note: cluster east is in zone 'us-east-1a'",
    ] {
        assert!(
            table.stdout.contains(expected),
            "{expected:?} in:\n{}",
            table.stdout
        );
    }

    // What cannot be explained is refused with a reason.
    let unknown = cli(&cp, &["explain", "shop/nope", "--cluster", "east"], None);
    assert!(
        !unknown.ok && unknown.stderr.contains("no service shop/nope"),
        "{}",
        unknown.stderr
    );
    let nowhere = cli(&cp, &["explain", "shop/web", "--cluster", "mars"], None);
    assert!(
        !nowhere.ok && nowhere.stderr.contains("no cluster named 'mars'"),
        "{}",
        nowhere.stderr
    );
}
