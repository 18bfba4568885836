//! `terraform-provider-meridian`: started by Terraform, never by hand.

fn main() -> std::process::ExitCode {
    let log = std::env::var("MERIDIAN_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(log))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let env = |name: &str| std::env::var(name).ok();
    let host = match meridian_terraform::plugin::handshake::host(&env) {
        Ok(host) => host,
        Err(e) => {
            eprintln!("terraform-provider-meridian: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("terraform-provider-meridian: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let env: meridian_terraform::provider::Env = Box::new(|name| std::env::var(name).ok());
    match runtime.block_on(meridian_terraform::plugin::serve::run(host, env)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("terraform-provider-meridian: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
