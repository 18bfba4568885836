//! `meridian-agent`: streams one cluster's endpoints to the control plane.

use clap::Parser;
use meridian_federation::{
    agent::{self, AgentConfig},
    sources::kubernetes::KubernetesOptions,
    SourceSpec,
};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "meridian-agent",
    version,
    about = "Streams a cluster's endpoints to the Meridian control plane"
)]
struct Args {
    /// The member cluster this agent reports (a `Cluster` resource).
    #[arg(long, env = "MERIDIAN_AGENT_CLUSTER")]
    cluster: String,
    /// Control-plane nodes, HOST:PORT[,HOST:PORT...]; the agent fails over between them.
    #[arg(
        long,
        env = "MERIDIAN_AGENT_CONTROL_PLANE",
        value_delimiter = ',',
        required = true
    )]
    control_plane: Vec<String>,
    /// `kubernetes`, `file:PATH` or `http-sd:URL`.
    #[arg(long, env = "MERIDIAN_AGENT_SOURCE")]
    source: String,
    #[arg(long, env = "MERIDIAN_AGENT_KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    #[arg(long, env = "MERIDIAN_AGENT_CONTEXT")]
    context: Option<String>,
    /// Kubernetes namespaces to export from (comma-separated; all by default).
    #[arg(long, env = "MERIDIAN_AGENT_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// How often file and http-sd sources are read.
    #[arg(long, env = "MERIDIAN_AGENT_REFRESH_INTERVAL", default_value = "5s")]
    refresh_interval: meridian_model::Duration,
    /// How long changes gather into one batch.
    #[arg(long, env = "MERIDIAN_AGENT_BATCH_INTERVAL", default_value = "100ms")]
    batch_interval: meridian_model::Duration,
    /// This agent's name in the control plane's status (default: cluster name and process id).
    #[arg(long, env = "MERIDIAN_AGENT_ID")]
    agent_id: Option<String>,
    /// Plaintext gRPC to an --insecure control plane (TLS is not available yet).
    #[arg(long, env = "MERIDIAN_INSECURE")]
    insecure: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if !args.insecure {
        eprintln!("error: TLS is not available in this build yet; pass --insecure to speak plaintext to an --insecure control plane");
        return ExitCode::FAILURE;
    }
    let kubernetes = KubernetesOptions {
        kubeconfig: args.kubeconfig,
        context: args.context,
        namespaces: args.namespaces,
    };
    let source = match SourceSpec::parse(&args.source, kubernetes) {
        Ok(source) => source.build(args.refresh_interval.as_std()),
        Err(e) => {
            eprintln!("error: --source: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = AgentConfig {
        agent_id: args
            .agent_id
            .unwrap_or_else(|| format!("{}-{}", args.cluster, std::process::id())),
        cluster: args.cluster,
        control_planes: args.control_plane,
        batch_interval: args.batch_interval.as_std(),
    };
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
    let error = runtime.block_on(agent::run(config, source));
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
