//! `meridian certs`: create the mesh's CA and issue certificates, written to
//! files; private keys are created readable by their owner only (0600) and
//! never overwritten.

use anyhow::{bail, Context};
use clap::Subcommand;
use meridian_identity::{
    ca,
    ca_dir::CaDir,
    spiffe::{Identity, SpiffeId},
};
use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path, time::Duration};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a CA in DIR (ca.pem, ca.key, trust-domain).
    CreateCa {
        #[arg(long)]
        trust_domain: String,
        #[arg(long)]
        dir: std::path::PathBuf,
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// Issue a certificate from the CA in --ca-dir: OUT.pem and OUT.key.
    Issue {
        #[arg(long)]
        ca_dir: std::path::PathBuf,
        /// For a control-plane node.
        #[arg(long, group = "who")]
        node: Option<u64>,
        /// For a proxy (with --cluster).
        #[arg(long, group = "who", requires = "cluster")]
        proxy: Option<String>,
        /// For the agent of --cluster.
        #[arg(long, group = "who", requires = "cluster")]
        agent: bool,
        /// For an operator of the admin API.
        #[arg(long, group = "who")]
        admin: Option<String>,
        /// For an operator who may only read through the admin API.
        #[arg(long, group = "who")]
        viewer: Option<String>,
        #[arg(long)]
        cluster: Option<String>,
        /// DNS names to add (a node's host names).
        #[arg(long)]
        dns: Vec<String>,
        #[arg(long, default_value_t = 1)]
        days: u64,
        /// Path prefix of the files to write.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

/// Writes a new file; `private` files are 0600. Refuses to overwrite.
pub(crate) fn write_new(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::CreateCa {
            trust_domain,
            dir,
            days: d,
        } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let ca = ca::create_ca(&trust_domain, days(d))?;
            let files = CaDir::new(&dir);
            write_new(&files.key_path(), &ca.key_pem, true)?;
            write_new(&files.cert_path(), &ca.cert_pem, false)?;
            write_new(
                &files.trust_domain_path(),
                &format!("{trust_domain}\n"),
                false,
            )?;
            outln!("created the CA for {trust_domain} in {}", dir.display());
        }
        CertsCommand::Issue {
            ca_dir,
            node,
            proxy,
            agent,
            admin,
            viewer,
            cluster,
            dns,
            days: d,
            out,
        } => {
            let ca_dir = CaDir::new(ca_dir);
            let trust_domain = ca_dir.trust_domain()?;
            let identity = match (node, proxy, agent, admin, viewer, cluster) {
                (Some(id), None, false, None, None, _) => Identity::Node(id),
                (None, Some(id), false, None, None, Some(cluster)) => Identity::Proxy { cluster, id },
                (None, None, true, None, None, Some(cluster)) => Identity::Agent { cluster },
                (None, None, false, Some(name), None, _) => Identity::Admin { name },
                (None, None, false, None, Some(name), _) => Identity::Viewer { name },
                _ => bail!("say who the certificate is for: --node N, --proxy ID --cluster C, --agent --cluster C, --admin NAME or --viewer NAME"),
            };
            let id = SpiffeId::new(&trust_domain, identity).map_err(anyhow::Error::msg)?;
            let issued = ca::issue(&ca_dir.read()?.signer(), &id, &dns, days(d))?;
            let key_path = out.with_extension("key");
            let cert_path = out.with_extension("pem");
            write_new(&key_path, &issued.key_pem, true)?;
            write_new(&cert_path, &issued.cert_pem, false)?;
            outln!(
                "issued {id}: {} and {}",
                cert_path.display(),
                key_path.display()
            );
        }
    }
    Ok(())
}
