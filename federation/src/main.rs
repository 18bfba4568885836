//! `meridian-agent`: streams one cluster's endpoints to the control plane.

use clap::Parser;
use meridian_federation::{
    agent::{self, AgentConfig},
    sources::kubernetes::KubernetesOptions,
    SourceSpec,
};
use meridian_identity::enroll;
use meridian_identity::spiffe::Identity;
use meridian_identity::tls::{Dialer, TlsFiles};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "meridian-agent",
    version,
    about = "Streams a cluster's endpoints to the Meridian control plane"
)]
struct Args {
    #[command(flatten)]
    otlp: meridian_telemetry::OtlpArgs,
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
    /// Plaintext gRPC to an --insecure control plane on this machine.
    #[arg(long, env = "MERIDIAN_INSECURE")]
    insecure: bool,
    /// The agent's certificate (PEM, `spiffe://.../cluster/NAME/agent`); written here when enrolling.
    #[arg(long, env = "MERIDIAN_AGENT_CERT")]
    cert: Option<PathBuf>,
    /// Its private key (PEM); written 0600 when enrolling.
    #[arg(long, env = "MERIDIAN_AGENT_KEY")]
    key: Option<PathBuf>,
    /// The CA certificates the control plane's certificate must chain to.
    #[arg(long, env = "MERIDIAN_AGENT_TRUST_BUNDLE")]
    trust_bundle: Option<PathBuf>,
    /// A bootstrap token (`meridian tokens create --role agent --cluster NAME`),
    /// used when --cert holds no valid certificate yet.
    #[arg(long, env = "MERIDIAN_AGENT_TOKEN")]
    token: Option<String>,
}

/// The dialer for the control plane (see [`enroll::workload_dialer`]).
async fn dialer(args: &Args) -> Result<Dialer, String> {
    let files = TlsFiles::select(
        args.insecure,
        args.cert.clone(),
        args.key.clone(),
        args.trust_bundle.clone(),
    )
    .map_err(|e| e.to_string())?;
    let workload = enroll::Workload {
        files,
        token: args.token.as_deref(),
        name: "",
        identity: Identity::Agent {
            cluster: args.cluster.clone(),
        },
        control_planes: &args.control_plane,
        flag: "--control-plane",
    };
    let (dialer, _) = enroll::workload_dialer(workload)
        .await
        .map_err(|e| e.to_string())?;
    Ok(dialer)
}

fn main() -> ExitCode {
    let args = Args::parse();
    meridian_telemetry::init_logging("info");
    let kubernetes = KubernetesOptions {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        namespaces: args.namespaces.clone(),
    };
    let source = match SourceSpec::parse(&args.source, kubernetes) {
        Ok(source) => source.build(args.refresh_interval.as_std()),
        Err(e) => {
            eprintln!("error: --source: {e}");
            return ExitCode::FAILURE;
        }
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
    let dialer = match runtime.block_on(dialer(&args)) {
        Ok(dialer) => dialer,
        Err(e) => {
            eprintln!("error: {e}");
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
        dialer,
    };
    let error = runtime.block_on(async {
        let _telemetry =
            match meridian_telemetry::init("meridian-agent", &config.agent_id, &args.otlp) {
                Ok(telemetry) => telemetry,
                Err(e) => return format!("{e:#}"),
            };
        agent::run(config, source).await.to_string()
    });
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
