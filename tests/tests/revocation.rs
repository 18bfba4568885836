//! What ends an identity before its certificate expires (issue 14, defect
//! 7): revoking a bootstrap token stops the renewals of every certificate
//! enrolled with it, while the certificates already issued work until they
//! expire; a node removed from the cluster is no longer admitted as a node;
//! a forged token is refused from a node's own copy, without a quorum.

use meridian_identity::{ca, tls::TlsFiles};
use meridian_proto::v1::{
    admin_client::AdminClient, certificates_client::CertificatesClient,
    federation_client::FederationClient, sync_request::Message, Batch, Hello, IssueRequest,
    ListRequest, SyncRequest, SyncResponse,
};
use meridian_tests::pki::{
    anonymous_dialer, assert_raft_refused, assert_refused, cli_as, dialer, tls_args, Pki,
};
use meridian_tests::{
    agreed_leader, eventually, http,
    node::{start_cluster_with, ServerNode, ServerOptions},
    xds,
};
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

/// A control plane of `count` nodes over mTLS, each issuing with `pki` and
/// `extra` flags, with a leader, holding cluster `east` and a service on
/// `port`; the nodes, an admin's files and the leader's id.
async fn control_plane(
    root: &Path,
    pki: &Pki,
    count: u64,
    extra: &[&str],
    port: u16,
) -> (Vec<ServerNode>, TlsFiles, u64) {
    let alice = pki.issue("alice", &["--admin", "alice"]);
    let mut extra_args = vec!["--ca-dir".to_string(), pki.ca_dir.display().to_string()];
    extra_args.extend(extra.iter().map(|a| a.to_string()));
    let nodes = start_cluster_with(root, count, |id| {
        let files = pki.issue(&format!("node-{id}-cert"), &["--node", &id.to_string()]);
        ServerOptions {
            global_args: tls_args(&files),
            extra_args: extra_args.clone(),
            dialer: dialer(&alice),
            ..ServerOptions::default()
        }
    });
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let mesh = format!(
        "kind: Cluster\nmetadata: {{name: east}}\nspec: {{region: us-east-1}}\n---\n\
         kind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{protocol: http, port: {port}}}\n"
    );
    let applied = cli_as(&alice, &nodes[0].grpc, &["apply", "-f", "-"], Some(&mesh));
    assert!(applied.ok, "{}", applied.stderr);
    (nodes, alice, leader)
}

/// `meridian tokens create` for a proxy of `east` named `name`: the token.
fn proxy_token(alice: &TlsFiles, server: &str, name: &str) -> String {
    let created = cli_as(
        alice,
        server,
        &[
            "tokens",
            "create",
            "--role",
            "proxy",
            "--cluster",
            "east",
            "--name",
            name,
        ],
        None,
    );
    assert!(created.ok, "{}", created.stderr);
    created.stdout.trim().to_string()
}

fn token_id(token: &str) -> String {
    token.split('.').next().expect("mrd-ID.SECRET").to_string()
}

/// Saves a certificate and its key beside `bundle` as `root/FILE.pem`, `.key`.
fn save(root: &Path, file: &str, cert_pem: &str, key_pem: &str, bundle: &Path) -> TlsFiles {
    let files = TlsFiles {
        cert: root.join(format!("{file}.pem")),
        key: root.join(format!("{file}.key")),
        bundle: bundle.to_path_buf(),
    };
    std::fs::write(&files.cert, cert_pem).expect("write cert");
    std::fs::write(&files.key, key_pem).expect("write key");
    files
}

/// `Certificates/Issue` at `addr`: with `token` (naming `name`) over a
/// connection without a certificate, or without one to renew `current`.
async fn issue(
    addr: &str,
    bundle: &Path,
    token: Option<(&str, &str)>,
    current: Option<&TlsFiles>,
) -> Result<(String, String), tonic::Status> {
    let (csr, key) = ca::csr().expect("csr");
    let dialer = match current {
        Some(files) => dialer(files),
        None => anonymous_dialer(bundle),
    };
    let channel = dialer.connect(addr).await.expect("connect");
    let (token, name) = token.unwrap_or_default();
    let reply = CertificatesClient::new(channel)
        .issue(IssueRequest {
            csr_pem: csr,
            token: token.to_string(),
            name: name.to_string(),
        })
        .await?
        .into_inner();
    Ok((reply.cert_pem, key))
}

/// Renews `current` at `addr`; the renewed certificate saved as `file`.
async fn renew(
    root: &Path,
    addr: &str,
    current: &TlsFiles,
    file: &str,
) -> Result<TlsFiles, tonic::Status> {
    let (cert, key) = issue(addr, &current.bundle, None, Some(current)).await?;
    Ok(save(root, file, &cert, &key, &current.bundle))
}

/// Whether `files` still get proxy `name` of `east` its configuration over
/// xDS from `addr`: Ok once the first clusters arrive, else the refusal.
async fn xds_with(files: &TlsFiles, addr: &str, name: &str) -> Result<(), String> {
    let channel = dialer(files)
        .connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let client = xds::delta_on(channel, xds::node(name, "east")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (clusters, ended) = client.with(|held| {
            (
                held.resources.get(xds::CLUSTER).map_or(0, |c| c.len()),
                held.ended.clone(),
            )
        });
        if clusters > 0 {
            return Ok(());
        }
        if let Some(ended) = ended {
            return Err(ended);
        }
        if Instant::now() > deadline {
            return Err("no answer".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn not_after(files: &TlsFiles) -> std::time::SystemTime {
    meridian_identity::tls::Leaf::from_pem(
        &std::fs::read_to_string(&files.cert).expect("cert"),
        &std::fs::read_to_string(&files.key).expect("key"),
        &meridian_identity::tls::provider(),
    )
    .expect("leaf")
    .not_after
}

/// How many lines of the log at `path` hold every one of `parts`.
fn log_lines(path: &Path, parts: &[&str]) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .count()
}

/// A proxy enrolled with a token renews; after `meridian tokens revoke` its
/// renewals are refused (PERMISSION_DENIED, saying why) while it keeps
/// routing, and the certificate it holds works until it expires. Every
/// certificate descended from the token is cut off, another token's are not,
/// and a certificate made with the CA (no enrolment) does not renew itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_ends_the_renewals_of_what_it_enrolled() {
    use meridian_tests::{proxy::ProxyProcess, upstream::Upstream};
    let root = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(root.path(), "ca");
    let port = meridian_tests::free_port();
    let (nodes, alice, _) =
        control_plane(root.path(), &pki, 1, &["--cert-lifetime", "12s"], port).await;
    let cp = nodes[0].grpc.clone();
    let upstream = Upstream::start("v1").await;
    let endpoints = format!(
        "kind: Endpoints\nmetadata: {{name: web, namespace: shop, cluster: east}}\n\
         spec: {{endpoints: [{{address: 127.0.0.1, port: {}}}]}}\n",
        upstream.port
    );
    assert!(cli_as(&alice, &cp, &["apply", "-f", "-"], Some(&endpoints)).ok);

    // A proxy starts with only the trust bundle and a token, and renews.
    let web_1_token = proxy_token(&alice, &cp, "web-1");
    let dir = root.path().join("web-1");
    std::fs::create_dir_all(&dir).expect("dir");
    let bundle = dir.join("bundle.pem");
    std::fs::copy(pki.bundle(), &bundle).expect("bundle");
    let proxy_files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        bundle: bundle.clone(),
    };
    let mut flags = tls_args(&proxy_files);
    flags.extend(["--token".into(), web_1_token.clone()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut proxy = ProxyProcess::new(root.path(), "web-1", "east", &[&cp]).secure(&flags);
    proxy.start();
    let addr = format!("127.0.0.1:{port}");
    let routed = || async {
        let (status, _) = http::get_host(&addr, "web.shop", "/").await?;
        (status == 200).then_some(())
    };
    eventually(WAIT, "the enrolled proxy to route web.shop", routed).await;
    let proxy_log = root.path().join("web-1.log");
    eventually(WAIT, "the proxy to renew its certificate", || async {
        (log_lines(&proxy_log, &["renewed the certificate"]) >= 1).then_some(())
    })
    .await;

    // A chain driven by hand: enrolled with a token, renewed by its certificate.
    let token = proxy_token(&alice, &cp, "web-9");
    let (cert, key) = issue(&cp, &pki.bundle(), Some((&token, "web-9")), None)
        .await
        .expect("enrolled");
    let first = save(root.path(), "web-9-first", &cert, &key, &pki.bundle());
    let renewed = renew(root.path(), &cp, &first, "web-9-renewed")
        .await
        .expect("an enrolled certificate renews");
    // Another token's chain, which its revocation must not touch.
    let other = proxy_token(&alice, &cp, "web-8");
    let (cert, key) = issue(&cp, &pki.bundle(), Some((&other, "web-8")), None)
        .await
        .expect("enrolled");
    let bystander = save(root.path(), "web-8", &cert, &key, &pki.bundle());

    for revoked in [&token, &web_1_token] {
        let done = cli_as(&alice, &cp, &["tokens", "revoke", &token_id(revoked)], None);
        assert!(done.ok, "{}", done.stderr);
    }

    // Every certificate of the revoked chain is refused renewal, saying why.
    for current in [&renewed, &first] {
        let refused = renew(root.path(), &cp, current, "never")
            .await
            .expect_err("the token was revoked");
        assert_refused(&refused, Code::PermissionDenied, "revoked");
        assert_refused(&refused, Code::PermissionDenied, &token_id(&token));
    }
    renew(root.path(), &cp, &bystander, "web-8-renewed")
        .await
        .expect("another token's certificates still renew");
    // A certificate made with the CA has no enrolment to revoke: no renewal.
    let refused = renew(root.path(), &cp, &alice, "never")
        .await
        .expect_err("not enrolled");
    assert_refused(&refused, Code::PermissionDenied, "not enrolled");

    // The renewed certificate still works until it expires...
    assert_eq!(xds_with(&renewed, &cp, "web-9").await, Ok(()));
    // ...and the proxy's next renewal is refused, while it keeps routing.
    eventually(WAIT, "the proxy's renewal to be refused", || async {
        let refused = ["renewing the certificate", "PermissionDenied", "revoked"];
        (log_lines(&proxy_log, &refused) >= 1).then_some(())
    })
    .await;
    eventually(WAIT, "the proxy to keep routing", routed).await;

    // Once expired, nothing renews it any more, and it is refused.
    let expiry = not_after(&renewed);
    let left = expiry
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_secs(1)).await;
    let expired = xds_with(&renewed, &cp, "web-9").await.expect_err("expired");
    assert!(expired.contains("expired"), "{expired}");
    eventually(WAIT, "the proxy to keep routing", routed).await;
    drop(proxy);
}

/// Opens a federation stream as whoever `files` name, for cluster `east`.
async fn federation_stream(
    files: &TlsFiles,
    addr: &str,
) -> Result<
    (
        tokio::sync::mpsc::Sender<SyncRequest>,
        tonic::Streaming<SyncResponse>,
    ),
    tonic::Status,
> {
    let channel = dialer(files).connect(addr).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(SyncRequest {
        message: Some(Message::Hello(Hello {
            cluster: "east".into(),
            agent_id: "in-process".into(),
        })),
    })
    .await
    .expect("hello");
    let stream = FederationClient::new(channel)
        .sync(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, stream))
}

fn batch(seq: u64) -> SyncRequest {
    SyncRequest {
        message: Some(Message::Batch(Batch {
            seq,
            ..Default::default()
        })),
    }
}

/// One batch on a federation stream: its acknowledgement or the refusal.
async fn send_batch(
    (tx, stream): &mut (
        tokio::sync::mpsc::Sender<SyncRequest>,
        tonic::Streaming<SyncResponse>,
    ),
    seq: u64,
) -> Result<(), tonic::Status> {
    tx.send(batch(seq))
        .await
        .map_err(|_| tonic::Status::cancelled("the stream is closed"))?;
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(ack))) if ack.acked_seq == seq => Ok(()),
        Ok(Ok(other)) => Err(tonic::Status::unknown(format!("{other:?}"))),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("no answer")),
    }
}

async fn list_as(files: &TlsFiles, addr: &str) -> Result<(), tonic::Status> {
    let channel = dialer(files).connect(addr).await.expect("connect");
    AdminClient::new(channel)
        .list(ListRequest {
            kind: "Service".into(),
            ..Default::default()
        })
        .await
        .map(drop)
}

/// A node removed with `meridian members remove` keeps a certificate valid
/// until it expires, but is no longer admitted as a node: not for admin
/// reads, endpoint streams (a stream it opened while a member ends at its
/// next batch) or Raft, and it cannot renew the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_is_no_longer_admitted_as_a_node() {
    let root = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(root.path(), "ca");
    let port = meridian_tests::free_port();
    let (mut nodes, alice, leader) = control_plane(root.path(), &pki, 3, &[], port).await;
    // A follower leaves; the other follower is asked.
    let removed = if leader == 3 { 2 } else { 3 };
    let asked = (1..=3)
        .find(|n| *n != removed && *n != leader)
        .expect("a follower");
    let removed_files = TlsFiles {
        cert: root.path().join(format!("node-{removed}-cert.pem")),
        key: root.path().join(format!("node-{removed}-cert.key")),
        bundle: pki.bundle(),
    };
    let asked_files = TlsFiles {
        cert: root.path().join(format!("node-{asked}-cert.pem")),
        key: root.path().join(format!("node-{asked}-cert.key")),
        bundle: pki.bundle(),
    };
    let addr = nodes[(asked - 1) as usize].grpc.clone();

    // While a member, the node reads, streams endpoints and speaks Raft.
    list_as(&removed_files, &addr)
        .await
        .expect("a member reads");
    let mut open = federation_stream(&removed_files, &addr)
        .await
        .expect("a member streams endpoints");
    send_batch(&mut open, 1).await.expect("acknowledged");

    let done = cli_as(
        &alice,
        &nodes[(leader - 1) as usize].grpc,
        &["members", "remove", &removed.to_string()],
        None,
    );
    assert!(done.ok, "{}", done.stderr);
    nodes[(removed - 1) as usize].kill();

    let refusal = eventually(WAIT, "the removal to reach the asked node", || async {
        list_as(&removed_files, &addr).await.err()
    })
    .await;
    assert_refused(&refusal, Code::PermissionDenied, "not a member");
    let refused = send_batch(&mut open, 2)
        .await
        .expect_err("the open stream ends");
    assert_refused(&refused, Code::PermissionDenied, "not a member");
    let refused = async {
        let mut stream = federation_stream(&removed_files, &addr).await?;
        send_batch(&mut stream, 1).await
    }
    .await
    .expect_err("no new endpoint stream");
    assert_refused(&refused, Code::PermissionDenied, "not a member");
    assert_raft_refused(&dialer(&removed_files), &addr, "not a member").await;
    let refused = renew(root.path(), &addr, &removed_files, "never")
        .await
        .expect_err("nodes do not renew through the API");
    assert_refused(&refused, Code::PermissionDenied, "node");

    // The members still are nodes.
    list_as(&asked_files, &addr).await.expect("a member reads");
    let mut stream = federation_stream(&asked_files, &addr)
        .await
        .expect("a member streams endpoints");
    send_batch(&mut stream, 1).await.expect("acknowledged");
}

/// With no quorum reachable, a node still refuses a forged token (a known
/// id with a wrong secret) or an unknown one at once, from its own copy;
/// before, every well-formed token cost a linearizable read first, which
/// here waited ten seconds. A genuine token is not used up by an attempt
/// that could not reach the quorum, and is single use afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_token_is_refused_without_a_quorum() {
    let root = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(root.path(), "ca");
    let port = meridian_tests::free_port();
    let (nodes, alice, leader) = control_plane(root.path(), &pki, 3, &[], port).await;
    let lone = nodes.iter().find(|n| n.id != leader).expect("a follower");
    let token = proxy_token(&alice, &nodes[(leader - 1) as usize].grpc, "web-1");
    let id = token_id(&token);
    eventually(WAIT, "the follower to hold the token", || async {
        let listed = cli_as(
            &alice,
            &lone.grpc,
            &["get", "tokens", "--consistency", "stale"],
            None,
        );
        listed.stdout.contains(&id).then_some(())
    })
    .await;

    for node in nodes.iter().filter(|n| n.id != lone.id) {
        node.signal("STOP");
    }
    let bundle = pki.bundle();
    let forged = format!("{id}.{}", "0".repeat(64));
    let unknown = format!("mrd-000000000000.{}", "0".repeat(64));
    for (what, presented, within) in [
        ("a forged secret", &forged, Duration::from_secs(3)),
        ("an unknown id", &unknown, Duration::from_secs(4)),
    ] {
        let started = Instant::now();
        let refused = issue(&lone.grpc, &bundle, Some((presented, "web-1")), None)
            .await
            .expect_err(what);
        let took = started.elapsed();
        assert_refused(&refused, Code::Unauthenticated, "not known");
        assert!(
            took < within,
            "{what} took {took:?} to refuse: it waited for a quorum"
        );
    }
    // The genuine token gets as far as the quorum read, which cannot happen.
    let attempt = tokio::time::timeout(
        Duration::from_secs(2),
        issue(&lone.grpc, &bundle, Some((&token, "web-1")), None),
    )
    .await;
    assert!(
        !matches!(&attempt, Ok(Err(status)) if status.code() == Code::Unauthenticated),
        "a valid token is not refused for want of a quorum: {attempt:?}"
    );
    drop(attempt);

    for node in nodes.iter().filter(|n| n.id != lone.id) {
        node.signal("CONT");
    }
    eventually(WAIT, "the genuine token to issue a certificate", || async {
        issue(&lone.grpc, &bundle, Some((&token, "web-1")), None)
            .await
            .ok()
    })
    .await;
    let reused = issue(&lone.grpc, &bundle, Some((&token, "web-1")), None)
        .await
        .expect_err("single use");
    assert_refused(&reused, Code::Unauthenticated, "used up");
}
