//! terraform-provider-meridian driven by the real Terraform (1.0.3) against
//! real control planes over mutual TLS: every resource created and seen by
//! the CLI, updates in place, replacement, drift corrected, import, a node
//! killed under the provider, destroy in an order the control plane
//! accepts; invalid values refused at plan time on their attribute,
//! control-plane refusals as diagnostics; the module and examples valid and
//! formatted.

use meridian_identity::tls::TlsFiles;
use meridian_tests::agent::AgentProcess;
use meridian_tests::pki::{dialer, tls_args, Pki};
use meridian_tests::terraform::{copy_tree, repo_terraform_dir, terraform_binary, Workspace};
use meridian_tests::{
    agreed_leader, cli_with, eventually, node::start_cluster_with, ServerNode, ServerOptions,
};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A control plane of `count` nodes over mutual TLS, and an admin's files.
async fn mtls_cluster(root: &Path, count: u64) -> (Vec<ServerNode>, TlsFiles) {
    let (nodes, admin, _) = mtls_cluster_with_ca(root, count).await;
    (nodes, admin)
}

/// The same, with the CA to issue more certificates from.
async fn mtls_cluster_with_ca(root: &Path, count: u64) -> (Vec<ServerNode>, TlsFiles, Pki) {
    let pki = Pki::new(root, "ca");
    let admin = pki.issue("admin", &["--admin", "terraform"]);
    let nodes = start_cluster_with(root, count, |id| {
        let node = pki.issue(&format!("node-{id}"), &["--node", &id.to_string()]);
        ServerOptions {
            global_args: tls_args(&node),
            extra_args: vec!["--ca-dir".into(), pki.ca_dir.display().to_string()],
            dialer: dialer(&admin),
            ..ServerOptions::default()
        }
    });
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    (nodes, admin, pki)
}

/// A Terraform directory whose provider reads the admin's files from the
/// `MERIDIAN_*` variables, as the CLI does.
fn workspace(dir: &Path, admin: &TlsFiles) -> Workspace {
    Workspace::new(dir)
        .env("MERIDIAN_CERT", &admin.cert.display().to_string())
        .env("MERIDIAN_KEY", &admin.key.display().to_string())
        .env("MERIDIAN_TRUST_BUNDLE", &admin.bundle.display().to_string())
}

/// `meridian get KIND -o json` (or any command) as the admin, through `server`.
fn cli(
    admin: &TlsFiles,
    server: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> meridian_tests::CliRun {
    let global = tls_args(admin);
    let global: Vec<&str> = global.iter().map(String::as_str).collect();
    cli_with(&global, server, args, stdin)
}

/// The objects of a kind, as `get KIND -o json` prints them.
fn items(admin: &TlsFiles, server: &str, kind: &str) -> Vec<Value> {
    let run = cli(admin, server, &["get", kind, "-o", "json"], None);
    assert!(run.ok, "get {kind}: {}", run.stderr);
    let list: Value = serde_json::from_str(&run.stdout).expect("JSON list");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn names(items: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = items
        .iter()
        .map(|i| {
            let m = &i["metadata"];
            match m["cluster"].as_str() {
                Some(c) => format!("{}@{c}", m["name"].as_str().unwrap_or("")),
                None => m["name"].as_str().unwrap_or("").to_string(),
            }
        })
        .collect();
    names.sort();
    names
}

fn find<'a>(items: &'a [Value], name: &str) -> &'a Value {
    items
        .iter()
        .find(|i| i["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {items:?}"))
}

const PROVIDERS: &str = r#"terraform {
  required_providers {
    meridian = { source = "meridian/meridian" }
  }
}
"#;

/// The mesh the life-cycle test manages; `web` is the service it edits.
fn mesh(servers: &[&str], web_name: &str, web_port: u16, web_timeout: &str, extra: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"{PROVIDERS}
provider "meridian" {{
  servers = [{servers}]
}}

resource "meridian_cluster" "east" {{
  name   = "east"
  region = "us-east-1"
  zone   = "us-east-1a"
  labels = {{ tier = "gold" }}
}}

resource "meridian_cluster" "west" {{
  name   = "west"
  region = "eu-west-1"
}}

module "checkout" {{
  source    = "./modules/service-mesh-service"
  namespace = "shop"
  name      = "checkout"
  port      = 8080
  versions = {{
    v1 = {{
      weight = 90
      endpoints = {{
        (meridian_cluster.east.name) = [{{ address = "10.0.0.7", port = 8080 }}]
        (meridian_cluster.west.name) = [{{ address = "10.1.0.7", port = 8080 }}]
      }}
    }}
    v2 = {{
      weight    = 10
      endpoints = {{ (meridian_cluster.east.name) = [{{ address = "10.0.0.9", port = 8080 }}] }}
    }}
  }}
  failover_order = [meridian_cluster.east.name, meridian_cluster.west.name]
}}

resource "meridian_service" "web" {{
  namespace        = "shop"
  name             = "{web_name}"
  labels           = {{ team = "web" }}
  protocol         = "http"
  port             = {web_port}
  lb               = "ring_hash"
  hash_on          = "header:x-user"
  timeout          = "{web_timeout}"
  allowed_clusters = [meridian_cluster.east.name, meridian_cluster.west.name]
  retries {{
    attempts        = 2
    per_try_timeout = "1s"
    on              = ["connect-failure", "5xx"]
  }}
  outlier_detection {{
    consecutive_5xx      = 5
    interval             = "10s"
    base_ejection_time   = "30s"
    max_ejection_percent = 50
  }}
  circuit_breaker {{
    max_connections      = 1024
    max_pending_requests = 512
    max_requests         = 2048
  }}
  health_check {{
    interval            = "5s"
    timeout             = "1s"
    unhealthy_threshold = 3
    healthy_threshold   = 2
    http {{
      path = "/healthz"
    }}
  }}
  transport {{
    mtls = true
  }}
}}

resource "meridian_endpoints" "web_vms" {{
  namespace = "shop"
  service   = meridian_service.web.name
  cluster   = meridian_cluster.west.name
  endpoint {{
    address = "192.168.1.10"
    port    = 8080
    weight  = 3
    zone    = "eu-west-1a"
    health  = "draining"
  }}
  endpoint {{
    address = "192.168.1.11"
    port    = 8080
  }}
}}

resource "meridian_bootstrap_token" "east_proxy" {{
  role     = "proxy"
  cluster  = meridian_cluster.east.name
  ttl      = "2h"
  max_uses = 3
}}

data "meridian_service" "checkout" {{
  namespace  = "shop"
  name       = "checkout-v1"
  depends_on = [module.checkout]
}}

data "meridian_cluster" "east" {{
  name = meridian_cluster.east.name
}}

data "meridian_members" "all" {{}}

data "meridian_proxies" "east" {{
  cluster = "east"
}}

output "token" {{
  value     = meridian_bootstrap_token.east_proxy.token
  sensitive = true
}}
output "token_id" {{ value = meridian_bootstrap_token.east_proxy.id }}
output "checkout_v1_port" {{ value = data.meridian_service.checkout.port }}
output "east_region" {{ value = data.meridian_cluster.east.region }}
output "members" {{ value = length(data.meridian_members.all.members) }}
output "has_leader" {{ value = data.meridian_members.all.leader > 0 }}
output "east_proxies" {{ value = length(data.meridian_proxies.east.proxies) }}
{extra}
"#,
        servers = servers.join(", ")
    )
}

fn output(tf: &Workspace, name: &str) -> String {
    tf.must(&["output", "-raw", name]).stdout.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_manages_a_mesh_through_its_whole_life() {
    let root = tempfile::tempdir().expect("temp dir");
    let (mut nodes, admin) = mtls_cluster(root.path(), 3).await;
    let servers: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    let servers: Vec<&str> = servers.iter().map(String::as_str).collect();
    let tf = workspace(&root.path().join("tf"), &admin);
    copy_tree(
        &repo_terraform_dir().join("modules"),
        &tf.dir.join("modules"),
    );
    tf.write("main.tf", &mesh(&servers, "web", 8080, "60s", ""));
    // Modules are installed by `terraform get`; dev_overrides needs no `init`.
    tf.must(&["get"]);

    // Apply creates every resource, and the CLI sees them.
    tf.apply();
    let via = servers[1];
    let services = items(&admin, via, "services");
    assert_eq!(
        names(&services),
        ["checkout", "checkout-v1", "checkout-v2", "web"]
    );
    let web = &find(&services, "web")["spec"];
    assert_eq!(web["lb"], "ring_hash");
    assert_eq!(web["hashOn"], "header:x-user");
    assert_eq!(web["timeout"], "1m");
    assert_eq!(
        web["retries"]["on"],
        serde_json::json!(["connect-failure", "5xx"])
    );
    assert_eq!(web["outlierDetection"]["consecutive5xx"], 5);
    assert_eq!(web["circuitBreaker"]["maxPendingRequests"], 512);
    assert_eq!(web["healthCheck"]["http"]["path"], "/healthz");
    assert_eq!(web["allowedClusters"], serde_json::json!(["east", "west"]));
    assert_eq!(web["transport"]["mtls"], true);
    assert_eq!(names(&items(&admin, via, "clusters")), ["east", "west"]);
    assert_eq!(
        names(&items(&admin, via, "endpoints")),
        [
            "checkout-v1@east",
            "checkout-v1@west",
            "checkout-v2@east",
            "web@west"
        ]
    );
    let splits = items(&admin, via, "trafficsplits");
    let backends = &find(&splits, "checkout")["spec"]["backends"];
    assert_eq!(backends[0]["weight"], 90, "{backends}");
    assert_eq!(backends[1]["weight"], 10, "{backends}");
    let policies = items(&admin, via, "failoverpolicies");
    assert_eq!(names(&policies), ["checkout-v1", "checkout-v2"]);
    assert_eq!(
        find(&policies, "checkout-v1")["spec"]["order"],
        serde_json::json!(["east", "west"])
    );
    let token_id = output(&tf, "token_id");
    assert!(output(&tf, "token").starts_with(&format!("{token_id}.")));
    let tokens = items(&admin, via, "tokens");
    assert_eq!(find(&tokens, &token_id)["spec"]["maxUses"], 3);
    assert_eq!(output(&tf, "checkout_v1_port"), "8080");
    assert_eq!(output(&tf, "east_region"), "us-east-1");
    assert_eq!(output(&tf, "members"), "3");
    assert_eq!(output(&tf, "has_leader"), "true");
    assert_eq!(output(&tf, "east_proxies"), "0");

    // A second plan shows no changes (60s and 1m are one timeout).
    let plan = tf.plan();
    assert_eq!(plan.code, 0, "{}", plan.output());

    // An edit updates in place.
    tf.write("main.tf", &mesh(&servers, "web", 8081, "60s", ""));
    let plan = tf.plan();
    assert_eq!(plan.code, 2, "{}", plan.output());
    assert!(
        plan.stdout.contains("update in-place") && !plan.stdout.contains("must be replaced"),
        "{}",
        plan.stdout
    );
    tf.apply();
    assert_eq!(
        find(&items(&admin, via, "services"), "web")["spec"]["port"],
        8081
    );

    // A name change replaces the service (and the endpoints that name it).
    tf.write("main.tf", &mesh(&servers, "web-frontend", 8081, "60s", ""));
    let plan = tf.plan();
    assert!(plan.stdout.contains("must be replaced"), "{}", plan.stdout);
    tf.apply();
    let services = items(&admin, via, "services");
    assert_eq!(
        names(&services),
        ["checkout", "checkout-v1", "checkout-v2", "web-frontend"]
    );
    assert!(names(&items(&admin, via, "endpoints")).contains(&"web-frontend@west".to_string()));

    // An edit made with the CLI shows as drift, and apply corrects it.
    let one = cli(
        &admin,
        via,
        &[
            "get",
            "services",
            "web-frontend",
            "-n",
            "shop",
            "-o",
            "json",
        ],
        None,
    );
    assert!(one.ok, "{}", one.stderr);
    let mut edited: Value = serde_json::from_str(&one.stdout).expect("JSON");
    edited["spec"]["port"] = 9999.into();
    let applied = cli(
        &admin,
        via,
        &["apply", "-f", "-"],
        Some(&edited.to_string()),
    );
    assert!(applied.ok, "{}", applied.stderr);
    let plan = tf.plan();
    assert_eq!(plan.code, 2, "{}", plan.output());
    assert!(plan.stdout.contains("9999 -> 8081"), "{}", plan.stdout);
    tf.apply();
    assert_eq!(
        find(&items(&admin, via, "services"), "web-frontend")["spec"]["port"],
        8081
    );

    // Import of an object made with the CLI, then a plan with no changes.
    let legacy = "kind: Service\nmetadata: {name: legacy, namespace: shop}\nspec: {protocol: grpc, port: 9000, timeout: 1m}\n";
    assert!(cli(&admin, via, &["apply", "-f", "-"], Some(legacy)).ok);
    let legacy_tf = r#"
resource "meridian_service" "legacy" {
  namespace = "shop"
  name      = "legacy"
  protocol  = "grpc"
  port      = 9000
  timeout   = "60s"
}
"#;
    tf.write(
        "main.tf",
        &mesh(&servers, "web-frontend", 8081, "60s", legacy_tf),
    );
    tf.must(&[
        "import",
        "-input=false",
        "meridian_service.legacy",
        "shop/legacy",
    ]);
    let plan = tf.plan();
    assert_eq!(plan.code, 0, "{}", plan.output());

    // The node the provider dials first dies: it goes on with the others.
    nodes[0].kill();
    tf.write(
        "main.tf",
        &mesh(&servers, "web-frontend", 8081, "30s", legacy_tf),
    );
    tf.apply();
    let services = items(&admin, via, "services");
    assert_eq!(find(&services, "web-frontend")["spec"]["timeout"], "30s");
    let plan = tf.plan();
    assert_eq!(plan.code, 0, "{}", plan.output());

    // Destroy removes everything, in an order the control plane accepts.
    tf.must(&["destroy", "-auto-approve", "-input=false"]);
    for kind in [
        "services",
        "endpoints",
        "trafficsplits",
        "failoverpolicies",
        "clusters",
    ] {
        assert_eq!(
            names(&items(&admin, via, kind)),
            Vec::<String>::new(),
            "{kind} left"
        );
    }
    let tokens = items(&admin, via, "tokens");
    assert_eq!(find(&tokens, &token_id)["spec"]["revoked"], true);
}

/// How many services in `namespace` a node holds (its own replica).
async fn count_services(node: &ServerNode, namespace: &str) -> Option<usize> {
    use meridian_proto::v1::{Consistency, ListRequest};
    let request = ListRequest {
        kind: "Service".into(),
        namespace: namespace.into(),
        consistency: Consistency::Stale as i32,
    };
    let reply = node.client().await?.list(request).await.ok()?;
    Some(reply.into_inner().items.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_moves_on_when_its_node_dies_during_an_apply() {
    const COUNT: usize = 150;
    let root = tempfile::tempdir().expect("temp dir");
    let (mut nodes, admin) = mtls_cluster(root.path(), 3).await;
    let servers: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.grpc)).collect();
    let tf = workspace(&root.path().join("tf"), &admin);
    tf.write(
        "main.tf",
        &format!(
            r#"{PROVIDERS}
provider "meridian" {{
  servers = [{}]
}}

resource "meridian_service" "many" {{
  count     = {COUNT}
  namespace = "load"
  name      = "s-${{count.index}}"
  protocol  = "http"
  port      = 8000
}}
"#,
            servers.join(", ")
        ),
    );
    // One write at a time, so the apply is still going when the node dies.
    let apply = tf.spawn(&["apply", "-auto-approve", "-input=false", "-parallelism=1"]);
    let seen = eventually(
        Duration::from_secs(60),
        "the apply to be under way",
        || async { count_services(&nodes[1], "load").await.filter(|n| *n >= 5) },
    )
    .await;
    nodes[0].kill();
    let run = tokio::task::spawn_blocking(move || apply.wait())
        .await
        .expect("join");
    assert!(run.ok(), "{}", run.output());
    assert!(
        seen < COUNT,
        "the node should die during the apply, not after it"
    );
    let all = count_services(&nodes[1], "load").await;
    assert_eq!(all, Some(COUNT));
    let plan = tf.plan();
    assert_eq!(plan.code, 0, "{}", plan.output());
}

/// The status of the only cluster, as the CLI shows it.
fn cluster_status(admin: &TlsFiles, server: &str) -> Value {
    items(admin, server, "clusters")
        .first()
        .map(|c| c["status"].clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_agent_reports_is_managed_all_the_same() {
    let root = tempfile::tempdir().expect("temp dir");
    let (nodes, admin, pki) = mtls_cluster_with_ca(root.path(), 1).await;
    let server = nodes[0].grpc.as_str();
    let tf = workspace(&root.path().join("tf"), &admin);
    let cluster = |label: &str| {
        let body = format!(
            "resource \"meridian_cluster\" \"east\" {{\n  name   = \"east\"\n  region = \"us-east-1\"\n  labels = {{ rack = \"{label}\" }}\n}}"
        );
        one_service(server, &body).replace(
            "resource \"meridian_cluster\" \"east\" {\n  name   = \"east\"\n  region = \"us-east-1\"\n}\n",
            "",
        )
    };
    tf.write("main.tf", &cluster("r1"));
    tf.apply();
    tf.write("main.tf", &cluster("r2"));
    tf.must(&["plan", "-input=false", "-out=change.plan"]);

    let planned_at = items(&admin, server, "clusters")[0]["metadata"]["revision"].clone();
    // The cluster's agent connects: its status, and so its revision, moves.
    let files = pki.issue("agent-east", &["--agent", "--cluster", "east"]);
    let source = root.path().join("east.yaml");
    std::fs::write(&source, "[]\n").expect("write the source file");
    let tls = tls_args(&files);
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let agent = |name: &str| {
        let mut agent = AgentProcess::new(
            root.path(),
            name,
            "east",
            &[server],
            &format!("file:{}", source.display()),
            &[],
        )
        .secure(&tls);
        agent.start();
        agent
    };
    let mut first = agent("agent-1");
    let session = eventually(Duration::from_secs(30), "the agent to report", || async {
        let status = cluster_status(&admin, server);
        status["session"]
            .as_u64()
            .filter(|_| !status["agent"].is_null())
    })
    .await;

    let moved = items(&admin, server, "clusters")[0]["metadata"]["revision"].clone();
    assert_ne!(
        moved, planned_at,
        "the agent's report should move the revision"
    );
    // Only the control plane's own field moved: the saved plan still applies.
    let applied = tf.run(&["apply", "-input=false", "change.plan"]);
    assert!(applied.ok(), "{}", applied.output());
    let clusters = items(&admin, server, "clusters");
    assert_eq!(clusters[0]["metadata"]["labels"]["rack"], "r2");

    // The same for a destroy planned before the agent came back with a new session.
    tf.must(&["plan", "-destroy", "-input=false", "-out=destroy.plan"]);
    first.kill();
    let _second = agent("agent-2");
    eventually(Duration::from_secs(30), "a new agent session", || async {
        let now = cluster_status(&admin, server)["session"].as_u64()?;
        (now != session).then_some(())
    })
    .await;
    let destroyed = tf.run(&["apply", "-input=false", "destroy.plan"]);
    assert!(destroyed.ok(), "{}", destroyed.output());
    assert!(items(&admin, server, "clusters").is_empty());
}

/// A service with one attribute of the test's choosing.
fn one_service(server: &str, body: &str) -> String {
    format!(
        r#"{PROVIDERS}
provider "meridian" {{
  servers = ["{server}"]
}}

resource "meridian_cluster" "east" {{
  name   = "east"
  region = "us-east-1"
}}

{body}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_values_and_refusals_are_diagnostics_on_their_attributes() {
    let root = tempfile::tempdir().expect("temp dir");
    let (nodes, admin) = mtls_cluster(root.path(), 1).await;
    let server = nodes[0].grpc.as_str();
    let tf = workspace(&root.path().join("tf"), &admin);

    // Each invalid value is an error at plan time, on its attribute's line,
    // and nothing is written.
    let cases = [
        (
            "lb = \"fastest\"",
            "resource \"meridian_service\" \"web\" {\n  name     = \"web\"\n  protocol = \"http\"\n  port     = 80\n  lb = \"fastest\"\n}",
            "Error: Invalid lb",
        ),
        (
            "timeout  = \"soon\"",
            "resource \"meridian_service\" \"web\" {\n  name     = \"web\"\n  protocol = \"http\"\n  port     = 80\n  timeout  = \"soon\"\n}",
            "Error: Invalid timeout",
        ),
        (
            "hash_on  = \"source_ip\"",
            "resource \"meridian_service\" \"web\" {\n  name     = \"web\"\n  protocol = \"http\"\n  port     = 80\n  hash_on  = \"source_ip\"\n}",
            "only applies to lb ip_hash, ring_hash or maglev",
        ),
        (
            "weight  = 2000000",
            "resource \"meridian_endpoints\" \"web\" {\n  service = \"web\"\n  cluster = meridian_cluster.east.name\n  endpoint {\n    address = \"10.0.0.1\"\n    port    = 80\n    weight  = 2000000\n  }\n}",
            "Error: Invalid endpoint[0].weight",
        ),
        (
            "weight  = -1",
            "resource \"meridian_traffic_split\" \"web\" {\n  name    = \"web\"\n  service = \"web\"\n  backend {\n    service = \"a\"\n    weight  = 5\n  }\n  backend {\n    service = \"b\"\n    weight  = -1\n  }\n}",
            "Error: Invalid backend[1].weight",
        ),
    ];
    for (line, body, error) in cases {
        tf.write("main.tf", &one_service(server, body));
        let plan = tf.run(&["plan", "-input=false"]);
        assert_eq!(plan.code, 1, "{line}: {}", plan.output());
        assert!(plan.stderr.contains(error), "{line}: {}", plan.stderr);
        assert!(
            plan.stderr.contains(line),
            "the diagnostic should show {line}: {}",
            plan.stderr
        );
        let apply = tf.run(&["apply", "-auto-approve", "-input=false"]);
        assert!(!apply.ok(), "{line}: {}", apply.output());
    }
    assert!(
        items(&admin, server, "clusters").is_empty(),
        "nothing is written"
    );
    assert!(
        items(&admin, server, "services").is_empty(),
        "nothing is written"
    );

    // A reference to a missing cluster is the control plane's refusal, on the attribute.
    let policy = r#"
resource "meridian_service" "api" {
  namespace = "shop"
  name      = "api"
  protocol  = "http"
  port      = 80
}

resource "meridian_failover_policy" "api" {
  namespace = "shop"
  name      = "api"
  service   = "shop/${meridian_service.api.name}"
  order     = [meridian_cluster.east.name, "mars"]
}
"#;
    tf.write("main.tf", &one_service(server, policy));
    let apply = tf.run(&["apply", "-auto-approve", "-input=false"]);
    assert!(!apply.ok());
    assert!(
        apply.stderr.contains("FailoverPolicy shop/api"),
        "{}",
        apply.stderr
    );
    assert!(
        apply.stderr.contains("unknown cluster 'mars'"),
        "{}",
        apply.stderr
    );

    // A deletion the control plane refuses (still referred to) is a diagnostic, and the object stays.
    let api_only = policy
        .split("resource \"meridian_failover_policy\"")
        .next()
        .unwrap_or_default();
    tf.write("main.tf", &one_service(server, api_only));
    tf.apply();
    let split = "kind: Service\nmetadata: {name: api-v1, namespace: shop}\nspec: {protocol: http, port: 80}\n---\n\
kind: TrafficSplit\nmetadata: {name: api, namespace: shop}\nspec: {service: shop/api, backends: [{service: shop/api-v1, weight: 1}]}\n";
    assert!(cli(&admin, server, &["apply", "-f", "-"], Some(split)).ok);
    tf.write("main.tf", &one_service(server, ""));
    let apply = tf.run(&["apply", "-auto-approve", "-input=false"]);
    assert!(!apply.ok(), "{}", apply.output());
    assert!(
        apply.stderr.contains("Cannot delete Service shop/api"),
        "{}",
        apply.stderr
    );
    assert!(names(&items(&admin, server, "services")).contains(&"api".to_string()));

    // A concurrent edit is reported, not overwritten: a saved plan applied
    // after someone else changed the object.
    tf.write("main.tf", &one_service(server, api_only));
    tf.apply();
    let bigger = api_only.replace("port      = 80", "port      = 81");
    tf.write("main.tf", &one_service(server, &bigger));
    tf.must(&["plan", "-input=false", "-out=change.plan"]);
    let edit =
        "kind: Service\nmetadata: {name: api, namespace: shop}\nspec: {protocol: http, port: 82}\n";
    assert!(cli(&admin, server, &["apply", "-f", "-"], Some(edit)).ok);
    let apply = tf.run(&["apply", "-input=false", "change.plan"]);
    assert!(!apply.ok(), "{}", apply.output());
    assert!(
        apply.stderr.contains("changed by someone else"),
        "{}",
        apply.stderr
    );
    assert_eq!(
        find(&items(&admin, server, "services"), "api")["spec"]["port"],
        82
    );
}

#[test]
fn modules_and_examples_are_valid_and_formatted() {
    let repo = repo_terraform_dir();
    let fmt = std::process::Command::new(terraform_binary())
        .args(["fmt", "-check", "-recursive", "-diff", "-no-color"])
        .arg(&repo)
        .output()
        .expect("run terraform fmt");
    assert!(
        fmt.status.success(),
        "terraform fmt -check: {}{}",
        String::from_utf8_lossy(&fmt.stdout),
        String::from_utf8_lossy(&fmt.stderr)
    );
    let root = tempfile::tempdir().expect("temp dir");
    copy_tree(&repo.join("modules"), &root.path().join("modules"));
    copy_tree(&repo.join("examples"), &root.path().join("examples"));
    let mut checked = 0;
    for group in ["modules", "examples"] {
        for entry in std::fs::read_dir(root.path().join(group)).expect("read folder") {
            let dir = entry.expect("entry").path();
            let tf = Workspace::new(&dir);
            tf.must(&["get"]);
            let validate = tf.run(&["validate"]);
            assert!(validate.ok(), "{}: {}", dir.display(), validate.output());
            checked += 1;
        }
    }
    assert!(checked >= 2, "a module and an example at least");
}

#[test]
fn run_by_hand_the_provider_says_it_is_a_plugin() {
    let run = std::process::Command::new(meridian_tests::binary("terraform-provider-meridian"))
        .env_remove("TF_PLUGIN_MAGIC_COOKIE")
        .output()
        .expect("run the provider");
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stdout.is_empty(), "no handshake line");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("Terraform plugin"), "{stderr}");
}

/// Whether process `pid` has exited (gone, or a zombie waiting to be reaped).
fn exited(pid: u32) -> bool {
    meridian_tests::proc_stat(pid).is_none_or(|fields| fields.first().is_some_and(|s| s == "Z"))
}

#[test]
fn the_provider_prints_its_handshake_and_exits_when_terraform_does() {
    use std::io::BufRead;
    let client = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    // A stand-in for Terraform: a shell that starts the provider and is then killed.
    let mut host = std::process::Command::new("sh")
        .args(["-c", "\"$0\" & echo \"pid $!\"; exec sleep 60"])
        .arg(meridian_tests::binary("terraform-provider-meridian"))
        .env(
            "TF_PLUGIN_MAGIC_COOKIE",
            "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2",
        )
        .env("PLUGIN_PROTOCOL_VERSIONS", "5,6")
        .env("PLUGIN_MIN_PORT", "10000")
        .env("PLUGIN_MAX_PORT", "25000")
        .env("PLUGIN_CLIENT_CERT", client.cert.pem())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the stand-in");
    let stdout = host.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let (mut pid, mut handshake) = (None, None);
    while pid.is_none() || handshake.is_none() {
        let line = lines.next().expect("a line").expect("readable");
        match line.strip_prefix("pid ") {
            Some(p) => pid = Some(p.parse::<u32>().expect("a pid")),
            None => handshake = Some(line),
        }
    }
    let (pid, handshake) = (pid.unwrap_or_default(), handshake.unwrap_or_default());
    let parts: Vec<&str> = handshake.split('|').collect();
    assert_eq!(parts[..3], ["1", "6", "tcp"], "{handshake}");
    let port: u16 = parts[3]
        .strip_prefix("127.0.0.1:")
        .expect("loopback")
        .parse()
        .expect("port");
    assert!((10000..=25000).contains(&port), "{handshake}");
    assert_eq!(parts[4], "grpc");
    // The provider's certificate: base64 DER without padding, as go-plugin reads it.
    assert!(
        parts[5].len() > 50 && !parts[5].contains('='),
        "{handshake}"
    );
    assert!(!exited(pid));

    let _ = host.kill();
    let _ = host.wait();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !exited(pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the provider outlived Terraform"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
