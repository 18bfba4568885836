//! `meridian-proxy`: the dataplane proxy. It takes its routes over delta xDS
//! from any control-plane node and keeps serving the last good ones (also
//! across restarts, from --state-dir) when no control plane answers.

mod admin;
mod breaker;
mod cluster;
mod coalesce;
mod config;
mod forward;
mod h1;
mod health_check;
mod inbound;
mod limits;
mod mesh_client;
mod metrics;
mod proxy;
mod random;
mod request_span;
mod route_table;
mod runtime;
mod server;
mod state;
mod tls;
mod transport;
mod turn_writes;
mod upstreams;
mod workers;
mod xds;

use clap::Parser;
use meridian_identity::enroll;
use meridian_identity::spiffe::Identity;
use meridian_identity::tls::{Credentials, Dialer, TlsFiles};
use std::sync::Arc;
use std::{net::IpAddr, path::PathBuf, process::ExitCode};

#[derive(Debug, Parser)]
#[command(name = "meridian-proxy", version, about = "Meridian's dataplane proxy")]
struct Args {
    #[command(flatten)]
    otlp: meridian_telemetry::OtlpArgs,
    /// Control-plane nodes serving xDS, HOST:PORT[,HOST:PORT...].
    #[arg(
        long,
        env = "MERIDIAN_PROXY_XDS",
        value_delimiter = ',',
        required = true
    )]
    xds: Vec<String>,
    #[arg(long, env = "MERIDIAN_PROXY_NODE_ID")]
    node_id: String,
    /// The member cluster this proxy runs in.
    #[arg(long, env = "MERIDIAN_PROXY_CLUSTER")]
    cluster: String,
    #[arg(long, env = "MERIDIAN_PROXY_REGION", default_value = "")]
    region: String,
    #[arg(long, env = "MERIDIAN_PROXY_ZONE", default_value = "")]
    zone: String,
    #[arg(
        long,
        env = "MERIDIAN_PROXY_ADMIN_ADDR",
        default_value = "127.0.0.1:15000"
    )]
    admin_addr: String,
    /// Where the last applied configuration is kept.
    #[arg(long, env = "MERIDIAN_PROXY_STATE_DIR")]
    state_dir: PathBuf,
    /// The address outbound listeners bind.
    #[arg(
        long,
        env = "MERIDIAN_PROXY_OUTBOUND_BIND",
        default_value = "127.0.0.1"
    )]
    outbound_bind: IpAddr,
    /// A PEM certificate (chain) for TLS on the listeners; plaintext is still accepted.
    #[arg(long, env = "MERIDIAN_PROXY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "MERIDIAN_PROXY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Plaintext xDS to a control plane on this machine.
    #[arg(long, env = "MERIDIAN_PROXY_INSECURE")]
    insecure: bool,
    /// The proxy's mesh certificate (`spiffe://.../cluster/CLUSTER/proxy/NODE_ID`);
    /// written here when enrolling with --token.
    #[arg(long, env = "MERIDIAN_PROXY_CERT")]
    cert: Option<PathBuf>,
    /// Its private key; written 0600 when enrolling.
    #[arg(long, env = "MERIDIAN_PROXY_KEY")]
    key: Option<PathBuf>,
    /// The CA certificates the control plane's certificate must chain to.
    #[arg(long, env = "MERIDIAN_PROXY_TRUST_BUNDLE")]
    trust_bundle: Option<PathBuf>,
    /// A bootstrap token (`meridian tokens create --role proxy --cluster CLUSTER`),
    /// used when --cert holds no valid certificate yet.
    #[arg(long, env = "MERIDIAN_PROXY_TOKEN")]
    token: Option<String>,
    /// Terminate service-to-service mTLS for a service in front of a local
    /// application: `NAMESPACE/NAME@LISTEN_ADDR=APP_ADDR` (repeatable).
    #[arg(long, env = "MERIDIAN_PROXY_INBOUND", value_delimiter = ',')]
    inbound: Vec<inbound::Inbound>,
    /// Seconds a client has to send a request's head (and a new connection
    /// its first byte and TLS handshake) before it is cut off.
    #[arg(
        long,
        env = "MERIDIAN_PROXY_HEADER_READ_TIMEOUT",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    header_read_timeout: u64,
    /// Open client connections, every listener together; past it a new
    /// connection is closed at once (counted in
    /// meridian_proxy_connections_refused_total). Keep it below the
    /// process's open-file limit (`ulimit -n`), which upstream connections
    /// share.
    #[arg(
        long,
        env = "MERIDIAN_PROXY_MAX_CONNECTIONS",
        default_value_t = 16_384,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    max_connections: u64,
    /// Concurrent streams a client may open on one HTTP/2 connection.
    #[arg(
        long,
        env = "MERIDIAN_PROXY_MAX_CONCURRENT_STREAMS",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    max_concurrent_streams: u32,
    /// KiB a request's head may take (HTTP/1.1 request line and headers;
    /// HTTP/2 decoded header list); larger is refused with 431. At most
    /// 100 headers per HTTP/1.1 request.
    #[arg(
        long,
        env = "MERIDIAN_PROXY_MAX_REQUEST_HEADERS_KB",
        default_value_t = 60,
        value_parser = clap::value_parser!(u32).range(8..=8192)
    )]
    max_request_headers_kb: u32,
    /// Threads serving the outbound listeners, each with its own listener
    /// socket (SO_REUSEPORT), event loop and upstream connection pools.
    /// Default: the cores available to the process.
    #[arg(
        long,
        env = "MERIDIAN_PROXY_WORKERS",
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    workers: Option<u16>,
}

impl Args {
    fn workers(&self) -> usize {
        match self.workers {
            Some(workers) => usize::from(workers),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    fn limits(&self) -> limits::Limits {
        limits::Limits {
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            max_concurrent_streams: self.max_concurrent_streams,
            max_header_bytes: self.max_request_headers_kb as usize * 1024,
        }
    }
}

/// How the proxy dials the control plane (see [`enroll::workload_dialer`]),
/// and its mesh credentials, if any.
async fn dialer(args: &Args) -> anyhow::Result<(Dialer, Option<Arc<Credentials>>)> {
    let files = TlsFiles::select(
        args.insecure,
        args.cert.clone(),
        args.key.clone(),
        args.trust_bundle.clone(),
    )?;
    let workload = enroll::Workload {
        files,
        token: args.token.as_deref(),
        name: &args.node_id,
        identity: Identity::Proxy {
            cluster: args.cluster.clone(),
            id: args.node_id.clone(),
        },
        control_planes: &args.xds,
        flag: "--xds",
    };
    Ok(enroll::workload_dialer(workload).await?)
}

/// How long open connections may take to finish on shutdown.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

fn main() -> ExitCode {
    let args = Args::parse();
    meridian_telemetry::init_logging("info");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    use anyhow::Context;
    let _telemetry = meridian_telemetry::init("meridian-proxy", &args.node_id, &args.otlp)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            tls::acceptor(cert, key)
                .map_err(anyhow::Error::msg)
                .context("--tls-cert/--tls-key")?,
        ),
        _ => None,
    };
    let (dialer, credentials) = dialer(&args).await?;
    let mesh = credentials
        .as_ref()
        .map(mesh_client::MeshTls::new)
        .transpose()
        .context("mesh mTLS client")?;
    let proxy = proxy::Proxy::new(
        args.outbound_bind,
        args.state_dir.clone(),
        tls,
        mesh,
        args.limits(),
        args.workers(),
    )
    .context("starting the worker threads")?;
    // The inbound listeners' connections to the application.
    tokio::spawn(proxy.upstreams.reap_idle());
    if let Some(credentials) = &credentials {
        proxy.metrics.certificate_expiry.track(credentials.clone());
    }
    for inbound in args.inbound.clone() {
        let Some(credentials) = credentials.clone() else {
            anyhow::bail!("--inbound terminates mutual TLS: it needs the proxy's --cert, --key and --trust-bundle");
        };
        let listener = tokio::net::TcpListener::bind(inbound.listen)
            .await
            .with_context(|| format!("binding --inbound {}", inbound.listen))?;
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = inbound.service.clone();
            if let Err(error) = inbound::serve(proxy, inbound, listener, credentials).await {
                tracing::error!(%service, %error, "the inbound listener stopped");
            }
        });
    }
    let resources = proxy.restore();
    let admin = tokio::net::TcpListener::bind(&args.admin_addr)
        .await
        .with_context(|| format!("binding --admin-addr {}", args.admin_addr))?;
    tokio::spawn(axum::serve(admin, admin::router(proxy.clone())).into_future());
    let config = xds::XdsConfig {
        servers: args.xds,
        dialer,
        node_id: args.node_id,
        cluster: args.cluster,
        region: args.region,
        zone: args.zone,
    };
    let client = xds::run(config, resources, proxy.as_ref());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = client => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: draining");
    proxy.drain(DRAIN_DEADLINE).await;
    Ok(())
}

use std::future::IntoFuture;
