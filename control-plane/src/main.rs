//! `meridian`: the control-plane server and the admin CLI in one binary.

#[macro_use]
mod stdout;

mod admin;
mod authz;
mod certificates;
mod cli;
mod demo;
mod events;
mod explain;
mod federation;
mod forward;
mod grpc_client;
mod http;
mod metrics;
mod node;
mod raft;
mod server;
mod xds;

use clap::{Parser, Subcommand};

/// mimalloc rather than glibc's malloc: each connected proxy's stream costs
/// the node less memory (72 against 79 KiB per stream at 1,000 proxies,
/// docs/benchmarks.md). Built without transparent huge pages, which raised
/// an idle node's RSS from 29 to 41 MiB (27 MiB without them).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The wall clock in Unix seconds (token expiry, certificate lifetimes, proxies' connect times).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
use meridian_identity::tls::TlsFiles;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "meridian",
    version,
    about = "Meridian: a multi-cluster service-mesh control plane"
)]
struct Cli {
    /// The control-plane nodes to talk to (CLI commands), `HOST:PORT[,HOST:PORT...]`:
    /// the first that answers is used.
    #[arg(
        long,
        global = true,
        env = "MERIDIAN_SERVER",
        default_value = "127.0.0.1:7400"
    )]
    server: String,
    /// Plaintext gRPC. The server refuses to bind non-loopback addresses with it.
    #[arg(long, global = true, env = "MERIDIAN_INSECURE")]
    insecure: bool,
    /// This node's or operator's certificate (PEM) for mutual TLS.
    #[arg(long, global = true, env = "MERIDIAN_CERT")]
    cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, global = true, env = "MERIDIAN_KEY")]
    key: Option<PathBuf>,
    /// The CA certificates (PEM) peers' certificates must chain to.
    #[arg(long, global = true, env = "MERIDIAN_TRUST_BUNDLE")]
    trust_bundle: Option<PathBuf>,
    /// Make the change (apply, delete) the root of a new trace and print its
    /// id; the CLI's own span is exported when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    #[arg(long, global = true)]
    trace: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a control-plane node.
    Server(server::config::ServerArgs),
    /// Create the mesh's CA and issue certificates (local files; no server involved).
    Certs {
        #[command(subcommand)]
        command: cli::certs::CertsCommand,
    },
    /// A whole mesh on this machine (3 control-plane nodes, 2 clusters, agents,
    /// proxies, echo upstreams) and a narrated failover scenario on it.
    Demo(demo::DemoArgs),
    /// The demo's echo upstream: answers every request with its name.
    #[command(hide = true)]
    DemoUpstream {
        #[arg(long)]
        name: String,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    #[command(flatten)]
    Admin(cli::AdminCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let tls = cli::ClientTls {
        insecure: cli.insecure,
        cert: cli.cert,
        key: cli.key,
        trust_bundle: cli.trust_bundle,
    };
    let result = match cli.command {
        Command::Certs { command } => cli::certs::run(command),
        Command::Server(args) => {
            meridian_telemetry::init_logging("info,openraft=warn");
            let config = TlsFiles::select(tls.insecure, tls.cert, tls.key, tls.trust_bundle)
                .map_err(anyhow::Error::from)
                .and_then(|files| Ok(args.validate(files)?));
            match config {
                Ok(config) => runtime.block_on(server::run(config)),
                Err(e) => Err(e),
            }
        }
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::DemoUpstream { name, listen } => {
            runtime.block_on(demo::upstream::serve(name, listen))
        }
        Command::Admin(command) => runtime.block_on(async {
            let _telemetry = match cli.trace {
                true => Some(meridian_telemetry::init(
                    "meridian-cli",
                    "cli",
                    &meridian_telemetry::OtlpArgs::from_env(),
                )?),
                false => None,
            };
            cli::run(&cli.server, tls, cli.trace, command).await
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
