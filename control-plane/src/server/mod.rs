//! `meridian server`: open the node's RocksDB, start Raft, refuse to start
//! if the data dir is empty but a peer records this node as having held the
//! cluster's data, serve gRPC and HTTP, found the cluster if this node is
//! one of its initial members.

mod bootstrapped;
pub mod config;

use crate::{
    admin::AdminService,
    authz::AuthzLayer,
    certificates::{open_ca, CertificatesService},
    federation::{self, liveness::Liveness, FederationService},
    forward::MAX_FORWARDED,
    grpc_client, http,
    metrics::Metrics,
    node::Node,
    raft::{
        durability,
        log_store::LogStore,
        network::Network,
        state_machine::StateMachine,
        store,
        transport::{serve_peers, RaftService},
        Raft,
    },
    xds::{self, registry::Registry, AdsServer, XdsService},
};
use anyhow::Context;
use config::ServerConfig;
use meridian_federation::agent::AgentConfig;
use meridian_identity::spiffe::Identity;
use meridian_identity::tls::{self, control_plane_node, Credentials, Dialer};
use meridian_proto::raft_wire;
use meridian_proto::v1::certificates_server::CertificatesServer;
use meridian_proto::v1::federation_server::FederationServer;
use meridian_proto::v1::{admin_server::AdminServer, raft_server::RaftServer, FILE_DESCRIPTOR_SET};
use openraft::{error::InitializeError, error::RaftError, BasicNode, SnapshotPolicy};
use std::{collections::BTreeMap, future::IntoFuture, sync::Arc};
use tokio::{net::TcpListener, sync::watch};

fn raft_config(config: &ServerConfig) -> anyhow::Result<Arc<openraft::Config>> {
    let raft_config = openraft::Config {
        cluster_name: "meridian".into(),
        heartbeat_interval: 200,
        election_timeout_min: 1_000,
        election_timeout_max: 2_000,
        install_snapshot_timeout: 10_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_threshold),
        // Keep a short tail after a snapshot so briefly lagging followers catch up from the log.
        max_in_snapshot_log_to_keep: config.snapshot_threshold.min(1_000),
        // Entries per AppendEntries: with entries of several commands kept
        // under 512 KiB (`raft/proposer.rs`), a message of them stays well
        // under the 64 MiB Raft message limit (openraft's default is 300).
        max_payload_entries: 64,
        ..Default::default()
    };
    Ok(Arc::new(
        raft_config.validate().context("raft configuration")?,
    ))
}

/// This node's credentials (checked to name this node) and how it dials
/// its peers; plaintext with `--insecure`.
fn credentials(config: &ServerConfig) -> anyhow::Result<(Option<Arc<Credentials>>, Dialer)> {
    let Some(files) = &config.tls else {
        return Ok((None, Dialer::insecure()));
    };
    let credentials = Credentials::from_files(files.clone()).context("loading TLS credentials")?;
    credentials
        .expect_identity(&Identity::Node(config.node_id))
        .context("--cert")?;
    credentials.spawn_reloader(CREDENTIALS_RELOAD);
    let dialer =
        Dialer::tls(&credentials, control_plane_node).context("TLS client configuration")?;
    Ok((Some(credentials), dialer))
}

/// How often certificate, key and trust bundle files are checked for changes.
const CREDENTIALS_RELOAD: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let _telemetry = meridian_telemetry::init(
        "meridian-server",
        &format!("node-{}", config.node_id),
        &config.otlp,
    )?;
    let (credentials, dialer) = credentials(&config)?;
    grpc_client::init(dialer.clone(), config.peer_addresses.clone());
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let db_dir = config.data_dir.join("db");
    let db =
        store::open(&db_dir).with_context(|| format!("opening RocksDB at {}", db_dir.display()))?;
    store::prime_wal(&db).context("preparing RocksDB's write-ahead log files")?;
    let log_store = LogStore::new(db.clone(), config.node_id).context("reading the raft log")?;
    let committed = log_store.committed_index();
    let durability = log_store.durability();
    let state = StateMachine::new(db, durability.clone()).context("reading the state machine")?;
    // What the log saved as committed is a hint that may trail what was
    // applied (it is written with appends, and a restore writes none), and
    // whatever was applied was committed.
    let applied = state
        .last_applied_index()
        .context("reading the state machine")?;
    committed.fetch_max(applied, std::sync::atomic::Ordering::Relaxed);
    let raft = Raft::new(
        config.node_id,
        raft_config(&config)?,
        Network::new(durability.clone()),
        log_store,
        state.clone(),
    )
    .await
    .context("starting raft")?;
    tokio::spawn(durability::release_commits(raft.clone(), durability));
    if !raft.is_initialized().await.context("reading raft state")? {
        // Before anything is served: nothing can reach this Raft yet, so it
        // has voted for and acknowledged nothing when it refuses.
        let peers = bootstrapped::peers(
            config.node_id,
            config.initial_cluster.as_ref(),
            &config.peer_addresses,
        );
        bootstrapped::check(config.node_id, &peers).await?;
    }
    let mesh = xds::mesh::follow(state.events(), state.view());
    let metrics = Arc::new(Metrics::default());
    let node = Arc::new(Node::new(
        config.node_id,
        raft.clone(),
        state,
        committed,
        metrics.pipeline.proposals.clone(),
    ));
    if let Some(credentials) = &credentials {
        metrics.certificate_expiry.track(credentials.clone());
    }
    let proxies = Arc::new(Registry::default());
    let liveness = Arc::new(Liveness::default());

    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding --grpc-addr {}", config.grpc_addr))?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding --http-addr {}", config.http_addr))?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AdminServer<AdminService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let ca = config.ca_dir.clone().map(open_ca).transpose()?;
    let certificates = CertificatesService::new(
        node.clone(),
        metrics.clone(),
        ca,
        credentials.clone(),
        config.cert_lifetime,
    );
    let (incoming, raft_peers) = tls::incoming_beside(
        grpc_listener,
        credentials.clone(),
        tls::GRPC_ALPN,
        tls::Beside {
            alpn: raft_wire::ALPN,
            first_byte: raft_wire::PREFACE[0],
        },
    )
    .context("TLS server configuration")?;
    serve_peers(raft_peers, node.clone(), metrics.clone());
    let grpc = tonic::transport::Server::builder()
        .layer(AuthzLayer::new(node.clone(), metrics.clone()))
        .add_service(health_service)
        .add_service(CertificatesServer::new(certificates))
        .add_service(reflection)
        .add_service(AdminServer::new(AdminService::new(
            node.clone(),
            metrics.clone(),
            proxies.clone(),
            mesh.clone(),
            config.tls.is_none(),
        )))
        .add_service(FederationServer::new(FederationService::new(
            node.clone(),
            liveness.clone(),
            metrics.clone(),
        )))
        .add_service(AdsServer::new(XdsService::new(
            config.node_id,
            mesh,
            proxies,
            metrics.clone(),
            credentials
                .as_ref()
                .and_then(|c| c.id())
                .map(|id| id.trust_domain),
        )))
        .add_service(
            RaftServer::new(RaftService::new(node.clone(), liveness.clone()))
                .max_decoding_message_size(MAX_FORWARDED)
                .max_encoding_message_size(MAX_FORWARDED),
        )
        .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone()));
    let grpc_task = tokio::spawn(grpc);
    let http_app = http::router(node.clone(), metrics);
    let http_task = tokio::spawn(
        axum::serve(http_listener, http_app)
            .with_graceful_shutdown(stopped(stop_rx))
            .into_future(),
    );
    tracing::info!(node_id = config.node_id, grpc = %config.grpc_addr, http = %config.http_addr, "meridian server started");

    if let Some(members) = &config.initial_cluster {
        found_cluster(&raft, members).await?;
    }
    tokio::spawn(bootstrapped::record_self(node.clone()));
    tokio::spawn(federation::liveness::run(
        node.clone(),
        liveness,
        config.agent_grace,
    ));
    if let Some((spec, cluster)) = config.source.clone() {
        let agent = AgentConfig {
            agent_id: format!("{cluster}-in-process-{}", config.node_id),
            cluster,
            control_planes: vec![config.grpc_addr.to_string()],
            batch_interval: std::time::Duration::from_millis(100),
            dialer,
        };
        tokio::spawn(async move {
            let error = meridian_federation::agent::run(
                agent,
                spec.build(std::time::Duration::from_secs(5)),
            )
            .await;
            tracing::error!(%error, "the in-process discovery source stopped");
        });
    }

    // A task of its own: Raft's metrics change with every entry, and the
    // future `block_on` drives runs on the main thread, which each change
    // would wake (about four thread switches per write on every node).
    let stopped = tokio::spawn(raft_stopped(raft.clone()));
    if let Some(fatal) = tokio::select! {
        () = shutdown_signal() => None,
        fatal = stopped => Some(fatal.unwrap_or_else(|e| format!("watching raft failed: {e}"))),
    } {
        // Its storage failed: this node cannot apply what the others do. It
        // exits rather than serve frozen routes, so proxies and agents move
        // to a healthy node and a supervisor can restart it.
        anyhow::bail!("raft stopped on a fatal error, exiting: {fatal}");
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "raft did not shut down cleanly");
    }
    let _ = grpc_task.await;
    let _ = http_task.await;
    Ok(())
}

/// Every founding node proposes the same initial membership; openraft makes
/// this safe, and a node that already has state skips it.
async fn found_cluster(raft: &Raft, members: &BTreeMap<u64, String>) -> anyhow::Result<()> {
    if raft.is_initialized().await.context("reading raft state")? {
        tracing::info!("rejoining the cluster from the data dir");
        return Ok(());
    }
    let nodes: BTreeMap<u64, BasicNode> = members
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr)))
        .collect();
    match raft.initialize(nodes).await {
        Ok(()) => tracing::info!(members = members.len(), "initialised a new cluster"),
        Err(RaftError::APIError(InitializeError::NotAllowed(e))) => {
            tracing::info!(reason = %e, "cluster already initialised")
        }
        Err(e) => return Err(anyhow::anyhow!("initialising the cluster: {e}")),
    }
    Ok(())
}

/// Resolves with the error once Raft has stopped on a fatal error.
async fn raft_stopped(raft: Raft) -> String {
    let mut metrics = raft.metrics();
    let stopped = metrics
        .wait_for(|m| m.running_state.is_err())
        .await
        .map(|m| match &m.running_state {
            Err(fatal) => fatal.to_string(),
            Ok(()) => String::new(),
        });
    match stopped {
        Ok(fatal) => fatal,
        // The metrics are gone only when Raft is: stopped all the same.
        Err(_) => "raft is gone".to_string(),
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
