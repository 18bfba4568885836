//! Identity and mutual TLS end to end: a three-node control plane formed
//! entirely over mTLS; callers without a valid certificate, or with one that
//! does not allow what they ask, refused with a reason and nothing changed;
//! bootstrap tokens that are single use and revocable.

use meridian_identity::{ca, spiffe::Identity, tls::TlsFiles};
use meridian_proto::v1::{
    admin_client::AdminClient, certificates_client::CertificatesClient,
    federation_client::FederationClient, sync_request::Message, Hello, IssueRequest, ListRequest,
    PutRequest, SyncRequest,
};
use meridian_tests::pki::{
    anonymous_dialer, assert_raft_refused, assert_refused, cli_as, dialer, tls_args, Pki,
    TRUST_DOMAIN,
};
use meridian_tests::{
    agreed_leader, eventually, http,
    node::{start_cluster_with, ServerNode, ServerOptions},
};
use std::time::Duration;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

const MESH: &str = "kind: Cluster\nmetadata: {name: east}\nspec: {region: us-east-1}\n---\n\
kind: Service\nmetadata: {name: web, namespace: shop}\nspec: {protocol: http, port: 8080}\n";

async fn admin(files: &TlsFiles, node: &ServerNode) -> AdminClient<tonic::transport::Channel> {
    AdminClient::new(dialer(files).connect(&node.grpc).await.expect("connect"))
}

async fn list_code(client: &mut AdminClient<tonic::transport::Channel>) -> (Code, String) {
    match client
        .list(ListRequest {
            kind: "Service".into(),
            ..Default::default()
        })
        .await
    {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_string()),
    }
}

async fn put_code(client: &mut AdminClient<tonic::transport::Channel>) -> (Code, String) {
    let manifest = r#"{"kind":"Service","metadata":{"name":"intruder","namespace":"shop"},"spec":{"protocol":"http","port":9}}"#;
    match client
        .put(PutRequest {
            manifest_json: manifest.into(),
            expected_revision: None,
        })
        .await
    {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_formed_over_mtls_authorizes_every_call_by_identity() {
    let root = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(root.path(), "ca");
    let alice = pki.issue("alice", &["--admin", "alice"]);
    let nodes = start_cluster_with(root.path(), 3, |id| {
        let node = pki.issue(&format!("node-{id}-cert"), &["--node", &id.to_string()]);
        ServerOptions {
            global_args: tls_args(&node),
            extra_args: vec!["--ca-dir".into(), pki.ca_dir.display().to_string()],
            dialer: dialer(&alice),
            ..ServerOptions::default()
        }
    });
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;

    // An admin writes through one node; Raft over mTLS carries it to all.
    let applied = cli_as(&alice, &nodes[1].grpc, &["apply", "-f", "-"], Some(MESH));
    assert!(applied.ok, "{}", applied.stderr);
    for node in &nodes {
        let listed = cli_as(&alice, &node.grpc, &["get", "services", "-o", "json"], None);
        assert!(
            listed.ok && listed.stdout.contains("\"web\""),
            "{}",
            listed.stderr
        );
    }
    let before = cli_as(
        &alice,
        &nodes[0].grpc,
        &["get", "services", "-o", "json"],
        None,
    )
    .stdout;
    // Nodes dial each other expecting the very node: node 1's address does not
    // pass for node 2.
    let expecting = |id| {
        dialer(&alice)
            .expecting(Identity::Node(id))
            .expect("dialer")
    };
    assert!(expecting(1).connect(&nodes[0].grpc).await.is_ok());
    assert!(expecting(2).connect(&nodes[0].grpc).await.is_err());

    // No certificate, another CA's, an expired one: UNAUTHENTICATED, with the reason.
    let node = &nodes[0];
    let mut anonymous = AdminClient::new(
        anonymous_dialer(&pki.bundle())
            .connect(&node.grpc)
            .await
            .expect("connect"),
    );
    let (code, message) = put_code(&mut anonymous).await;
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains("no client certificate"), "{message}");

    let other = Pki::new(root.path(), "other-ca");
    let mallory = other.issue("mallory", &["--admin", "mallory"]);
    let mallory = TlsFiles {
        bundle: pki.bundle(),
        ..mallory
    };
    let (code, message) = put_code(&mut admin(&mallory, node).await).await;
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(
        message.contains("not issued by a CA in the trust bundle"),
        "{message}"
    );

    let expired = pki.expired("expired", &format!("spiffe://{TRUST_DOMAIN}/admin/old"));
    let (code, message) = put_code(&mut admin(&expired, node).await).await;
    assert_eq!(code, Code::Unauthenticated, "{message}");
    assert!(message.contains("expired"), "{message}");

    // Valid identities that may not do what they ask: PERMISSION_DENIED.
    let viewer = pki.issue("bob", &["--viewer", "bob"]);
    let mut bob = admin(&viewer, node).await;
    assert_eq!(list_code(&mut bob).await.0, Code::Ok, "viewers read");
    let (code, message) = put_code(&mut bob).await;
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(
        message.contains("writes need an admin identity"),
        "{message}"
    );

    let proxy = pki.issue("web-1", &["--proxy", "web-1", "--cluster", "east"]);
    let (code, message) = list_code(&mut admin(&proxy, node).await).await;
    assert_eq!(
        code,
        Code::PermissionDenied,
        "a proxy may not read the admin API: {message}"
    );

    // A node certificate of a node that is not a member may not speak Raft.
    let stranger_node = pki.issue("node-9-cert", &["--node", "9"]);
    assert_raft_refused(&dialer(&stranger_node), &node.grpc, "not a member").await;
    // Nor may an admin, however trusted, nor a peer without a certificate.
    assert_raft_refused(&dialer(&alice), &node.grpc, "member nodes").await;
    let anonymous = anonymous_dialer(&pki.bundle());
    assert_raft_refused(&anonymous, &node.grpc, "valid client certificate").await;

    let agent = pki.issue("agent-east", &["--agent", "--cluster", "east"]);
    let channel = dialer(&agent).connect(&node.grpc).await.expect("connect");
    let hello = SyncRequest {
        message: Some(Message::Hello(Hello {
            cluster: "west".into(),
            agent_id: "sneaky".into(),
        })),
    };
    let refused = async {
        let mut stream = FederationClient::new(channel)
            .sync(tokio_stream::iter([hello]))
            .await?
            .into_inner();
        stream.message().await
    }
    .await
    .expect_err("an agent may not write another cluster's endpoints");
    assert_refused(&refused, Code::PermissionDenied, "cluster 'west'");

    // Nothing changed, and every refusal was counted.
    let after = cli_as(
        &alice,
        &nodes[0].grpc,
        &["get", "services", "-o", "json"],
        None,
    )
    .stdout;
    assert_eq!(before, after);
    let (_, metrics) = http::get(&node.http, "/metrics").await.expect("metrics");
    assert!(
        metrics.contains("meridian_grpc_refusals_total{service=\"meridian.v1.Admin\",code=\"Unauthenticated\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meridian_grpc_refusals_total{service=\"meridian.v1.Admin\",code=\"PermissionDenied\"} 2"),
        "{metrics}"
    );

    // Bootstrap tokens: created by admins only, single use, revocable.
    let denied = cli_as(
        &viewer,
        &node.grpc,
        &["tokens", "create", "--role", "proxy", "--cluster", "east"],
        None,
    );
    assert!(
        !denied.ok && denied.stderr.contains("PermissionDenied"),
        "{}",
        denied.stderr
    );
    let created = cli_as(
        &alice,
        &node.grpc,
        &["tokens", "create", "--role", "proxy", "--cluster", "east"],
        None,
    );
    assert!(created.ok, "{}", created.stderr);
    let token = created.stdout.trim().to_string();
    let issue = |token: String, csr: String| {
        let bundle = pki.bundle();
        let addr = nodes[2].grpc.clone();
        async move {
            let channel = anonymous_dialer(&bundle)
                .connect(&addr)
                .await
                .expect("connect");
            CertificatesClient::new(channel)
                .issue(IssueRequest {
                    csr_pem: csr,
                    token,
                    name: "web-9".into(),
                })
                .await
        }
    };
    let (csr, key) = ca::csr().expect("csr");
    let refused = issue(token.clone(), "not a CSR".into())
        .await
        .expect_err("bad CSR");
    assert_refused(&refused, Code::InvalidArgument, "");
    let issued = issue(token.clone(), csr.clone())
        .await
        .expect("the token is still unused after a malformed request")
        .into_inner();
    assert_eq!(
        issued.spiffe_id,
        format!("spiffe://{TRUST_DOMAIN}/cluster/east/proxy/web-9")
    );
    let leaf = meridian_identity::tls::Leaf::from_pem(
        &issued.cert_pem,
        &key,
        &meridian_identity::tls::provider(),
    )
    .expect("the certificate fits the key");
    let lifetime = leaf
        .not_after
        .duration_since(std::time::SystemTime::now())
        .expect("valid");
    assert!(
        lifetime > Duration::from_secs(23 * 3600) && lifetime <= Duration::from_secs(24 * 3600)
    );
    let reused = issue(token, csr.clone()).await.expect_err("single use");
    assert_refused(&reused, Code::Unauthenticated, "used up");

    let created = cli_as(
        &alice,
        &node.grpc,
        &["tokens", "create", "--role", "proxy", "--cluster", "east"],
        None,
    );
    let token = created.stdout.trim().to_string();
    let id = token.split('.').next().expect("id").to_string();
    let revoked = cli_as(&alice, &node.grpc, &["tokens", "revoke", &id], None);
    assert!(revoked.ok, "{}", revoked.stderr);
    let refused = issue(token, csr.clone()).await.expect_err("revoked");
    assert_refused(&refused, Code::Unauthenticated, "revoked");
    let forged = issue(format!("{id}.{}", "0".repeat(64)), csr.clone())
        .await
        .expect_err("forged");
    assert_refused(&forged, Code::Unauthenticated, "");
    // A token bound to a name mints no other.
    let bound = cli_as(
        &alice,
        &node.grpc,
        &[
            "tokens",
            "create",
            "--role",
            "proxy",
            "--cluster",
            "east",
            "--name",
            "web-5",
        ],
        None,
    );
    assert!(bound.ok, "{}", bound.stderr);
    let refused = issue(bound.stdout.trim().to_string(), csr)
        .await
        .expect_err("bound to another name");
    assert_refused(&refused, Code::PermissionDenied, "");

    let (_, metrics) = http::get(&nodes[2].http, "/metrics")
        .await
        .expect("metrics");
    for counted in [
        "{service=\"meridian.v1.Certificates\",code=\"Unauthenticated\"} 3",
        "{service=\"meridian.v1.Certificates\",code=\"PermissionDenied\"} 1",
    ] {
        assert!(
            metrics.contains(&format!("meridian_grpc_refusals_total{counted}")),
            "reused, revoked, forged and misnamed tokens are counted: {metrics}"
        );
    }

    // A plaintext client gets nowhere near a TLS node.
    let plaintext = meridian_tests::cli(&node.grpc, &["get", "services"], None);
    assert!(!plaintext.ok);

    eventually(
        WAIT,
        "the token uses to be visible to operators",
        || async {
            let listed = cli_as(&alice, &nodes[0].grpc, &["get", "tokens"], None);
            (listed.ok && listed.stdout.contains("1/1") && listed.stdout.contains("true"))
                .then_some(())
        },
    )
    .await;
}

/// A one-node control plane over mTLS that issues certificates with `pki`,
/// with a leader; its nodes, an admin's files and the node's files.
async fn tls_control_plane(
    root: &std::path::Path,
    pki: &Pki,
    extra: &[&str],
) -> (Vec<ServerNode>, TlsFiles, TlsFiles) {
    let alice = pki.issue("alice", &["--admin", "alice"]);
    let node_files = pki.issue("node-1-cert", &["--node", "1"]);
    let mut extra_args = vec!["--ca-dir".to_string(), pki.ca_dir.display().to_string()];
    extra_args.extend(extra.iter().map(|a| a.to_string()));
    let nodes = start_cluster_with(root, 1, |_| ServerOptions {
        global_args: tls_args(&node_files),
        extra_args: extra_args.clone(),
        dialer: dialer(&alice),
        ..ServerOptions::default()
    });
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    (nodes, alice, node_files)
}

fn log_count(path: &std::path::Path, needle: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// Proxies and agents enrol with tokens, then renew their short-lived
/// certificates (and the node its own) under steady proxied load without a
/// failed request or a dropped xDS or federation stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_workloads_renew_under_load_without_a_failed_request() {
    use meridian_tests::{agent::AgentProcess, proxy::ProxyProcess, upstream::Upstream};
    let root = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(root.path(), "ca");
    let (nodes, alice, node_files) =
        tls_control_plane(root.path(), &pki, &["--cert-lifetime", "6s"]).await;
    let cp = nodes[0].grpc.clone();
    let port = meridian_tests::free_port();
    let mesh = MESH.replace("port: 8080", &format!("port: {port}"));
    assert!(cli_as(&alice, &cp, &["apply", "-f", "-"], Some(&mesh)).ok);

    let token = |role: &str| {
        let created = cli_as(
            &alice,
            &cp,
            &["tokens", "create", "--role", role, "--cluster", "east"],
            None,
        );
        assert!(created.ok, "{}", created.stderr);
        created.stdout.trim().to_string()
    };
    // Each workload starts with only the trust bundle and a token.
    let workload_files = |name: &str| {
        let dir = root.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::copy(pki.bundle(), dir.join("bundle.pem")).expect("bundle");
        vec![
            "--cert".to_string(),
            dir.join("cert.pem").display().to_string(),
            "--key".into(),
            dir.join("key.pem").display().to_string(),
            "--trust-bundle".into(),
            dir.join("bundle.pem").display().to_string(),
        ]
    };

    let upstream = Upstream::start("v1").await;
    let endpoints = root.path().join("endpoints.yaml");
    std::fs::write(
        &endpoints,
        format!("- service: shop/web\n  endpoints: [{{address: 127.0.0.1, port: {}, health: healthy}}]\n", upstream.port),
    )
    .expect("endpoints file");
    let mut agent_args = workload_files("agent");
    agent_args.extend(["--token".into(), token("agent")]);
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let mut agent = AgentProcess::new(
        root.path(),
        "agent-east",
        "east",
        &[&cp],
        &format!("file:{}", endpoints.display()),
        &[],
    )
    .secure(&agent_args);
    agent.start();

    let mut proxy_args = workload_files("proxy");
    proxy_args.extend(["--token".into(), token("proxy")]);
    let proxy_args: Vec<&str> = proxy_args.iter().map(String::as_str).collect();
    let mut proxy = ProxyProcess::new(root.path(), "web-1", "east", &[&cp]).secure(&proxy_args);
    proxy.start();
    let addr = format!("127.0.0.1:{port}");
    eventually(WAIT, "the enrolled proxy to route web.shop", || async {
        let (status, _) = http::get_host(&addr, "web.shop", "/").await?;
        (status == 200).then_some(())
    })
    .await;

    // Steady load across several renewals (every ~4 s) and a rotation of the
    // node's own certificate on disk.
    let load = {
        let addr = addr.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            let until = tokio::time::Instant::now() + Duration::from_secs(14);
            while tokio::time::Instant::now() < until {
                match http::get_host(&addr, "web.shop", "/").await {
                    Some((200, _)) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rotated = pki.issue("node-1-rotated", &["--node", "1"]);
    std::fs::rename(&rotated.cert, &node_files.cert).expect("rotate cert");
    std::fs::rename(&rotated.key, &node_files.key).expect("rotate key");
    let (ok, failed) = load.await.expect("load");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(ok > 100, "only {ok} requests");

    let proxy_log = root.path().join("web-1.log");
    let agent_log = root.path().join("agent-east.log");
    let node_log = root.path().join("node-1.log");
    assert!(
        log_count(&proxy_log, "renewed the certificate") >= 2,
        "the proxy renewed"
    );
    assert!(
        log_count(&agent_log, "renewed the certificate") >= 2,
        "the agent renewed"
    );
    assert!(
        log_count(&node_log, "reloaded TLS credentials") >= 1,
        "the node reloaded its certificate"
    );
    assert_eq!(
        log_count(&node_log, "xDS stream opened"),
        1,
        "the xDS stream was never dropped"
    );
    assert_eq!(
        log_count(&node_log, "agent connected"),
        1,
        "the federation stream was never dropped"
    );

    // Both report how long their certificates have left.
    let (_, node_metrics) = http::get(&nodes[0].http, "/metrics")
        .await
        .expect("metrics");
    assert!(
        node_metrics.contains(
            "meridian_tls_certificate_expiry_seconds{identity=\"spiffe://mesh.test/node/1\"}"
        ),
        "{node_metrics}"
    );
    let (_, proxy_metrics) = http::get(&proxy.admin, "/metrics").await.expect("metrics");
    assert!(
        proxy_metrics.contains(
            "meridian_proxy_tls_certificate_expiry_seconds{identity=\"spiffe://mesh.test/cluster/east/proxy/web-1\"}"
        ),
        "{proxy_metrics}"
    );

    // The renewed agent still streams changes.
    let second = Upstream::start("v2").await;
    let tmp = endpoints.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!(
            "- service: shop/web\n  endpoints: [{{address: 127.0.0.1, port: {}, health: healthy}}, {{address: 127.0.0.1, port: {}, health: healthy}}]\n",
            upstream.port, second.port
        ),
    )
    .expect("endpoints file");
    std::fs::rename(&tmp, &endpoints).expect("rename");
    eventually(WAIT, "the second endpoint to arrive", || async {
        let listed = meridian_tests::endpoints_of(&nodes[0], "shop", "web", "east").await?;
        (listed.len() == 2).then_some(())
    })
    .await;
    drop((agent, proxy));
}

/// A raw HTTP/1.1 GET over TLS with `files`' certificate: the status code.
async fn get_over_mtls(files: &TlsFiles, addr: &str) -> Option<u16> {
    request_over_mtls(files, addr, "GET /").await
}

/// `METHOD TARGET` (the start of a request line) for web.shop over mutual
/// TLS with `files`: the response's status.
async fn request_over_mtls(files: &TlsFiles, addr: &str, start: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let credentials = meridian_identity::tls::Credentials::from_files(files.clone()).ok()?;
    let config = meridian_identity::tls::client_config(
        &credentials,
        meridian_identity::tls::mesh_proxy,
        &[b"http/1.1"],
    )
    .ok()?;
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls::pki_types::ServerName::try_from("proxy").ok()?;
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .ok()?;
    stream
        .write_all(
            format!("{start} HTTP/1.1\r\nHost: web.shop\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Service-to-service mTLS: the calling proxy originates it with its mesh
/// certificate, the proxy in front of the application terminates it and
/// admits only proxies of the clusters the service allows; a proxy of
/// another cluster neither sees the service nor gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_carry_a_service_over_mtls_and_admit_only_allowed_clusters() {
    use meridian_tests::{proxy::ProxyProcess, upstream::Upstream};
    let root = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(root.path(), "ca");
    let (nodes, alice, _) = tls_control_plane(root.path(), &pki, &[]).await;
    let cp = nodes[0].grpc.clone();

    let app = Upstream::start("app").await;
    let (web_port, public_port, inbound_port) = (
        meridian_tests::free_port(),
        meridian_tests::free_port(),
        meridian_tests::free_port(),
    );
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: r}}\n---\n\
         kind: Cluster\nmetadata: {{name: west}}\nspec: {{region: r}}\n---\n\
         kind: Cluster\nmetadata: {{name: north}}\nspec: {{region: r}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\n\
         spec: {{protocol: http, port: {web_port}, allowedClusters: [east, west], transport: {{mtls: true}}}}\n---\n\
         kind: Service\nmetadata: {{name: public, namespace: shop}}\nspec: {{protocol: http, port: {public_port}}}\n---\n\
         kind: Endpoints\nmetadata: {{name: web, namespace: shop, cluster: west}}\n\
         spec: {{endpoints: [{{address: 127.0.0.1, port: {inbound_port}}}]}}\n---\n\
         kind: Endpoints\nmetadata: {{name: public, namespace: shop, cluster: west}}\n\
         spec: {{endpoints: [{{address: 127.0.0.1, port: {}}}]}}\n",
        app.port
    );
    let applied = cli_as(&alice, &cp, &["apply", "-f", "-"], Some(&mesh));
    assert!(applied.ok, "{}", applied.stderr);

    let start = |name: &str, cluster: &str, bind: &str, extra: &[String]| {
        let files = pki.issue(
            &format!("{name}-cert"),
            &["--proxy", name, "--cluster", cluster],
        );
        let mut flags = tls_args(&files);
        flags.extend(["--outbound-bind".to_string(), bind.to_string()]);
        flags.extend(extra.iter().cloned());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut proxy = ProxyProcess::new(root.path(), name, cluster, &[&cp]).secure(&flags);
        proxy.start();
        (proxy, files)
    };
    let inbound = format!("shop/web@127.0.0.1:{inbound_port}=127.0.0.1:{}", app.port);
    let (_server_side, _) = start(
        "web-west",
        "west",
        "127.0.0.2",
        &["--inbound".into(), inbound],
    );
    let (_client_side, caller_files) = start("caller-east", "east", "127.0.0.1", &[]);
    let (outsider, outsider_files) = start("caller-north", "north", "127.0.0.3", &[]);

    // East's proxy reaches the application through west's proxy, over mTLS.
    let addr = format!("127.0.0.1:{web_port}");
    eventually(WAIT, "east to reach web.shop over mTLS", || async {
        let (status, body) = http::get_host(&addr, "web.shop", "/").await?;
        (status == 200 && body.contains("app")).then_some(())
    })
    .await;

    // Operators see which identity each proxy proved.
    let listed = cli_as(&alice, &cp, &["get", "proxies", "-o", "json"], None);
    assert!(
        listed
            .stdout
            .contains("spiffe://mesh.test/cluster/east/proxy/caller-east"),
        "{}",
        listed.stdout
    );

    // Plaintext to the inbound listener gets no answer; north's certificate
    // gets a 403 naming the reason; north's proxy does not even see web.shop.
    let inbound_addr = format!("127.0.0.1:{inbound_port}");
    let plaintext = http::get_host(&inbound_addr, "web.shop", "/").await;
    assert!(
        plaintext.as_ref().is_none_or(|(status, _)| *status != 200),
        "{plaintext:?}"
    );
    assert_eq!(
        get_over_mtls(&outsider_files, &inbound_addr).await,
        Some(403)
    );
    // An admitted caller's `OPTIONS *` names nothing to hand on: 400, not
    // a 502 from a target no connection can be made to.
    assert_eq!(
        request_over_mtls(&caller_files, &inbound_addr, "OPTIONS *").await,
        Some(400)
    );
    assert_eq!(get_over_mtls(&caller_files, &inbound_addr).await, Some(200));
    eventually(WAIT, "north's proxy to have its routes", || async {
        let (_, dump) = http::get(&outsider.admin, "/config_dump").await?;
        dump.contains("public.shop").then_some(dump)
    })
    .await;
    let (_, dump) = http::get(&outsider.admin, "/config_dump")
        .await
        .expect("dump");
    assert!(!dump.contains("web.shop"), "north must not see web.shop");
    let through_north = http::get_host(&format!("127.0.0.3:{web_port}"), "web.shop", "/").await;
    assert!(
        through_north.is_none(),
        "north has no listener for web.shop"
    );
}

/// CA rotation as docs/identity.md describes it: a node whose trust bundle
/// gains the new root accepts certificates from both CAs without a restart,
/// then serves with a certificate of the new CA; a third CA stays out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_with_both_roots_rotates_the_ca_without_a_restart() {
    let root = tempfile::tempdir().expect("temp dir");
    let old = Pki::new(root.path(), "ca");
    let new = Pki::new(root.path(), "ca-new");
    let old_root = std::fs::read_to_string(old.bundle()).expect("old root");
    let new_root = std::fs::read_to_string(new.bundle()).expect("new root");
    let both = root.path().join("both.pem");
    std::fs::write(&both, format!("{old_root}{new_root}")).expect("both");
    let node_bundle = root.path().join("node-bundle.pem");
    std::fs::write(&node_bundle, &old_root).expect("node bundle");
    let with_bundle = |files: TlsFiles, bundle: &std::path::Path| TlsFiles {
        bundle: bundle.to_path_buf(),
        ..files
    };
    let node_files = with_bundle(old.issue("node-1-cert", &["--node", "1"]), &node_bundle);
    let alice = with_bundle(old.issue("alice", &["--admin", "alice"]), &both);
    let carol = with_bundle(new.issue("carol", &["--admin", "carol"]), &both);
    let nodes = start_cluster_with(root.path(), 1, |_| ServerOptions {
        global_args: tls_args(&node_files),
        dialer: dialer(&alice),
        ..ServerOptions::default()
    });
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let node = &nodes[0];
    assert_eq!(list_code(&mut admin(&alice, node).await).await.0, Code::Ok);
    let (code, message) = list_code(&mut admin(&carol, node).await).await;
    assert_eq!(
        code,
        Code::Unauthenticated,
        "the new CA is not trusted yet: {message}"
    );

    // Step 2: the node's bundle holds both roots; no restart.
    let tmp = root.path().join("node-bundle.tmp");
    std::fs::write(&tmp, format!("{old_root}{new_root}")).expect("write");
    std::fs::rename(&tmp, &node_bundle).expect("rename");
    eventually(WAIT, "the node to trust the new CA", || async {
        (list_code(&mut admin(&carol, node).await).await.0 == Code::Ok).then_some(())
    })
    .await;
    assert_eq!(
        list_code(&mut admin(&alice, node).await).await.0,
        Code::Ok,
        "old still trusted"
    );

    // Step 3: the node serves with a certificate of the new CA.
    let rotated = new.issue("node-1-new", &["--node", "1"]);
    std::fs::rename(&rotated.key, &node_files.key).expect("key");
    std::fs::rename(&rotated.cert, &node_files.cert).expect("cert");
    let only_new = root.path().join("only-new.pem");
    std::fs::write(&only_new, &new_root).expect("only new");
    let carol_new_only = with_bundle(carol.clone(), &only_new);
    eventually(
        WAIT,
        "the node to present the new CA's certificate",
        || async {
            let channel = dialer(&carol_new_only).connect(&node.grpc).await.ok()?;
            AdminClient::new(channel)
                .list(ListRequest {
                    kind: "Service".into(),
                    ..Default::default()
                })
                .await
                .ok()
        },
    )
    .await;

    let third = Pki::new(root.path(), "ca-third");
    let mallory = with_bundle(third.issue("mallory", &["--admin", "mallory"]), &both);
    let (code, _) = list_code(&mut admin(&mallory, node).await).await;
    assert_eq!(code, Code::Unauthenticated, "a third CA stays out");
}

/// A node joins a running cluster over mTLS: added as a voter, it accepts
/// the leader's Raft calls before it knows the membership, catches up, and
/// serves the data; afterwards both nodes count it as a voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_a_cluster_over_mtls() {
    let root = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(root.path(), "ca");
    let (nodes, alice, _) = tls_control_plane(root.path(), &pki, &[]).await;
    let applied = cli_as(&alice, &nodes[0].grpc, &["apply", "-f", "-"], Some(MESH));
    assert!(applied.ok, "{}", applied.stderr);

    let joining_files = pki.issue("node-2-cert", &["--node", "2"]);
    let mut joining = ServerNode::new(
        root.path(),
        2,
        ServerOptions {
            global_args: tls_args(&joining_files),
            dialer: dialer(&alice),
            ..ServerOptions::default()
        },
    );
    joining.start();
    eventually(WAIT, "the new node to listen", || async {
        joining.client().await.map(drop)
    })
    .await;
    let added = cli_as(
        &alice,
        &nodes[0].grpc,
        &["members", "add", "2", &joining.grpc, "--voter"],
        None,
    );
    assert!(added.ok, "{}", added.stderr);
    eventually(WAIT, "the new node to hold the services", || async {
        let listed = cli_as(
            &alice,
            &joining.grpc,
            &["get", "services", "--consistency", "stale", "-o", "json"],
            None,
        );
        (listed.ok && listed.stdout.contains("\"web\"")).then_some(())
    })
    .await;
    for node in [&nodes[0], &joining] {
        let status = node.status().await.expect("status");
        let voters = status.members.iter().filter(|m| m.role == "voter").count();
        assert_eq!(voters, 2, "node {}: {:?}", node.id, status.members);
    }
}
