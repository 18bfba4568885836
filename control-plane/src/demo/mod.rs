//! `meridian demo`: a whole mesh on this machine, as real processes, and a
//! narrated failover scenario played on it.

mod control;
mod mesh;
mod pki;
mod process;
mod scenario;
mod traffic;
pub mod upstream;
mod view;

use anyhow::Context;
use clap::Args;
use mesh::Mesh;
use process::Binaries;
use scenario::Demo;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long the scenario runs (each of its four steps gets a quarter,
    /// more when an event takes longer); with --no-scenario, how long the
    /// mesh runs (until Ctrl-C by default).
    #[arg(long)]
    duration: Option<meridian_model::Duration>,
    /// Start the mesh and its traffic, play nothing, run until Ctrl-C.
    #[arg(long)]
    no_scenario: bool,
    /// Requests per second sent through each proxy.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rate: u32,
    /// Plain progress lines even on a terminal.
    #[arg(long)]
    plain: bool,
}

/// The scenario's length when --duration is not given.
const DEFAULT_DURATION: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let binaries = Binaries::beside_this_one()?;
    let mut mesh = Mesh::prepare(&binaries)?;
    let live = !args.plain && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let outcome = tokio::select! {
        outcome = play(&mut mesh, &args, live) => outcome,
        signal = interrupted() => signal.map(|()| {
            showln!("\ninterrupted: stopping every process");
            true
        }),
    };
    mesh.shutdown().await;
    let dir = mesh.dir().display().to_string();
    drop(mesh);
    showln!("stopped every process and removed {dir}");
    match outcome? {
        true => Ok(()),
        false => anyhow::bail!("the scenario did not complete (see above)"),
    }
}

/// Starts the mesh and plays the scenario; whether every step completed.
async fn play(mesh: &mut Mesh, args: &DemoArgs, live: bool) -> anyhow::Result<bool> {
    showln!("starting a mesh in {}", mesh.dir().display());
    let leader = mesh
        .start_control_plane()
        .await
        .context("starting the control plane")?;
    showln!("control plane: 3 nodes over mutual TLS, leader node-{leader}");
    mesh.control
        .apply(&mesh.manifests(80))
        .await
        .context("applying the mesh's objects")?;
    showln!("applied: clusters east (us-east) and west (eu-west), service checkout.shop split 80/20 between checkout-v1 and checkout-v2, failover order east then west");
    mesh.start_data_plane()
        .await
        .context("starting agents, upstreams and proxies")?;
    showln!("data plane: in each cluster an agent (file source), three echo upstreams and a meridian-proxy");
    let mut demo = Demo::new(mesh, args.rate, live);
    if args.no_scenario {
        demo.run_until(args.duration.map(|d| d.as_std())).await;
        return Ok(true);
    }
    let duration = args.duration.map_or(DEFAULT_DURATION, |d| d.as_std());
    Ok(demo.play(duration).await)
}

/// Ctrl-C or SIGTERM.
async fn interrupted() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("listening for Ctrl-C"),
        _ = terminate.recv() => Ok(()),
    }
}
