//! `meridian tokens`: create, list and revoke bootstrap tokens; redeem one
//! for an operator certificate.

use anyhow::Context;
use clap::{Args, Subcommand};
use meridian_identity::enroll;
use meridian_identity::tls::{control_plane_node, Credentials, Dialer, TlsFiles};
use meridian_proto::v1::{self as pb, admin_client::AdminClient};
use std::path::PathBuf;
use tonic::transport::Channel;

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token; it is printed once (only its hash is stored).
    Create {
        /// proxy, agent, admin or viewer.
        #[arg(long)]
        role: String,
        /// The cluster of a proxy or agent token.
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long, default_value = "1h")]
        ttl: meridian_model::Duration,
        /// How many certificates it may obtain (1: single use).
        #[arg(long, default_value_t = 1)]
        max_uses: u32,
        /// The only name it may put in a certificate (a proxy's node id, an operator's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Revoke a token by its id (`mrd-...`, the part before the dot).
    Revoke { id: String },
}

/// Trade an admin or viewer token for a certificate, written to OUT.pem,
/// OUT.key and OUT.bundle.pem; needs only --trust-bundle.
#[derive(Debug, Args)]
pub struct Enroll {
    #[arg(long)]
    token: String,
    /// The name the certificate will carry (`spiffe://.../admin/NAME`).
    #[arg(long)]
    name: String,
    #[arg(long)]
    out: PathBuf,
}

pub async fn run(mut client: AdminClient<Channel>, command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create {
            role,
            cluster,
            ttl,
            max_uses,
            name,
        } => {
            let reply = client
                .create_token(pb::CreateTokenRequest {
                    role,
                    cluster: cluster.unwrap_or_default(),
                    ttl_seconds: ttl.as_std().as_secs().max(1),
                    max_uses,
                    name: name.unwrap_or_default(),
                })
                .await?
                .into_inner();
            outln!("{}", reply.token);
            eprintln!(
                "token {} expires at {} (unix seconds); it is not shown again",
                reply.id, reply.expires_at_unix_seconds
            );
        }
        TokensCommand::Revoke { id } => {
            client
                .revoke_token(pb::RevokeTokenRequest { id: id.clone() })
                .await?;
            outln!("token {id} revoked");
        }
    }
    Ok(())
}

/// Redeems a token with only the trust bundle: the caller has no certificate yet.
pub async fn enroll(
    server: &str,
    trust_bundle: Option<&std::path::Path>,
    redeem: Enroll,
) -> anyhow::Result<()> {
    let dialer = match trust_bundle {
        Some(path) => {
            let bundle = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Dialer::tls(&Credentials::from_pem(&bundle, None)?, control_plane_node)?
        }
        None => Dialer::insecure(),
    };
    let enrolled = enroll::request(&dialer, server, Some(&redeem.token), &redeem.name).await?;
    let files = TlsFiles {
        cert: redeem.out.with_extension("pem"),
        key: redeem.out.with_extension("key"),
        bundle: redeem.out.with_extension("bundle.pem"),
    };
    enrolled.save(&files)?;
    outln!(
        "wrote {}, {} and {}",
        files.cert.display(),
        files.key.display(),
        files.bundle.display()
    );
    Ok(())
}
