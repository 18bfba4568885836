//! The admin CLI: `apply`, `get`, `delete`, `members`, `status`,
//! `explain`, `snapshot`. It speaks only the admin gRPC API, but for the offline
//! `snapshot restore` and `snapshot status`.

pub mod certs;
mod explain;
mod output;
mod proxies;
mod snapshot;
mod tokens;

use anyhow::{bail, Context};
use clap::{Subcommand, ValueEnum};
use meridian_identity::tls::{
    control_plane_node, require_loopback, server_list, Credentials, Dialer, TlsFiles,
};
use meridian_model::{parse_manifests, Kind};
use meridian_proto::v1::{self as pb, admin_client::AdminClient};
use meridian_telemetry::{self as telemetry, Context as TraceContext, SpanKind};
use std::io::Read;
use tonic::transport::Channel;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create or update resources from a YAML or JSON file ("-" for stdin), all or nothing.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Show resources of a kind, or one by name; `get proxies` lists connected proxies.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// For Endpoints: the member cluster.
        #[arg(long)]
        cluster: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
        #[arg(long, value_enum, default_value_t = ReadConsistency::Linearizable)]
        consistency: ReadConsistency,
    },
    /// Delete a resource.
    Delete {
        kind: String,
        name: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(long)]
        cluster: Option<String>,
    },
    /// List and change the control plane's Raft membership.
    Members {
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// This node's view of the cluster: leader, term, indexes, members.
    Status {
        /// Instead: which proxies, on every node, hold this revision (as
        /// `apply` printed it), which do not yet, and which rejected it.
        #[arg(long, value_name = "REVISION")]
        propagation: Option<u64>,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// How a proxy in a locality routes a service now: the split, the
    /// priority tiers in failover order, their endpoints, health and share
    /// of the traffic, and why.
    Explain {
        /// `namespace/name`, or `name` with -n.
        service: String,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// The member cluster of the proxy.
        #[arg(long)]
        cluster: String,
        /// The zone the proxy would claim (taken only in a cluster that spans zones).
        #[arg(long)]
        zone: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Bootstrap tokens: proxies, agents and operators trade one for a certificate.
    Tokens {
        #[command(subcommand)]
        command: tokens::TokensCommand,
    },
    /// Trade an admin or viewer bootstrap token for a certificate (needs only --trust-bundle).
    Enroll(tokens::Enroll),
    /// Save the replicated state to a file; restore a new cluster from one.
    Snapshot {
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
}

/// The CLI's TLS flags, as given.
pub struct ClientTls {
    pub insecure: bool,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
    pub trust_bundle: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    List {
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Add a node as a learner; with --voter, promote it once it has caught up.
    Add {
        node_id: u64,
        addr: String,
        #[arg(long)]
        voter: bool,
    },
    /// Promote a learner to voter.
    Promote {
        node_id: u64,
    },
    Remove {
        node_id: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Yaml,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReadConsistency {
    Linearizable,
    Stale,
}

/// One line for the user: the gRPC message and code, or the error chain.
pub fn one_line(e: &anyhow::Error) -> String {
    if let Some(status) = e.downcast_ref::<tonic::Status>() {
        return format!("{} ({:?})", status.message(), status.code());
    }
    format!("{e:#}").replace('\n', " ")
}

/// How the CLI dials: mutual TLS with the operator's certificate, or plaintext.
pub(crate) fn dialer(tls: Option<TlsFiles>) -> anyhow::Result<Dialer> {
    match tls {
        None => Ok(Dialer::insecure()),
        Some(files) => {
            let credentials = Credentials::from_files(files)?;
            Ok(Dialer::tls(&credentials, control_plane_node)?)
        }
    }
}

/// The nodes `--server` lists, in order.
fn servers(server: &str) -> impl Iterator<Item = &str> {
    server_list(server)
}

/// A client of the first listed node that answers, so the CLI goes on
/// working when the node it would have used is down.
pub(crate) async fn connect(server: &str, dialer: &Dialer) -> anyhow::Result<AdminClient<Channel>> {
    match dialer.connect_first(servers(server)).await {
        Ok((_, channel)) => {
            Ok(AdminClient::new(channel).max_decoding_message_size(pb::MAX_ADMIN_RESPONSE))
        }
        Err(unreachable) if unreachable.0.is_empty() => {
            bail!("--server names no control-plane node")
        }
        Err(unreachable) => Err(unreachable.into()),
    }
}

fn key(
    kind: Kind,
    name: &str,
    namespace: Option<String>,
    cluster: Option<String>,
) -> pb::ResourceKey {
    pb::ResourceKey {
        kind: kind.to_string(),
        namespace: namespace.unwrap_or_default(),
        name: name.to_string(),
        cluster: cluster.unwrap_or_default(),
    }
}

/// Runs an admin command. With `trace`, a change is the root of a new trace
/// (exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is set) whose id is printed.
pub async fn run(
    server: &str,
    tls: ClientTls,
    trace: bool,
    command: AdminCommand,
) -> anyhow::Result<()> {
    if let AdminCommand::Snapshot { command } = command {
        // Only `save` dials a node; `restore` and `status` work offline.
        let client = async || connect(server, &client_dialer(server, tls)?).await;
        return snapshot::run(command, client).await;
    }
    if let AdminCommand::Enroll(enroll) = command {
        // A token must not travel in plaintext beyond this machine.
        let bundle = match (tls.insecure, tls.trust_bundle) {
            (true, _) => {
                for addr in servers(server) {
                    require_loopback("--server", addr)?;
                }
                None
            }
            (false, Some(bundle)) => Some(bundle),
            (false, None) => bail!("enroll needs --trust-bundle (or --insecure on loopback)"),
        };
        let first = servers(server).next().unwrap_or(server);
        return tokens::enroll(first, bundle.as_deref(), enroll).await;
    }
    let dialer = client_dialer(server, tls)?;
    let cx = match trace {
        true => telemetry::root("meridian.cli", SpanKind::Client),
        false => TraceContext::new(),
    };
    match command {
        AdminCommand::Apply { file } => {
            let text = read_input(&file)?;
            let mut client = connect(server, &dialer).await?;
            let applied = apply_manifests(&mut client, &text, &cx)
                .await
                .with_context(|| file.clone())?;
            for (resource, revision) in applied {
                outln!(
                    "{} applied (revision {revision})",
                    output::describe(&resource.key())
                );
            }
            print_trace(&cx);
        }
        AdminCommand::Get {
            kind,
            name,
            namespace,
            cluster,
            output: format,
            consistency,
        } => {
            if matches!(kind.to_ascii_lowercase().as_str(), "proxies" | "proxy") {
                let reply = connect(server, &dialer)
                    .await?
                    .list_proxies(pb::ListProxiesRequest { local_only: false })
                    .await?
                    .into_inner();
                return proxies::print_proxies(&reply, format);
            }
            let kind: Kind = kind.parse()?;
            let consistency = match consistency {
                ReadConsistency::Linearizable => pb::Consistency::Linearizable,
                ReadConsistency::Stale => pb::Consistency::Stale,
            } as i32;
            let mut client = connect(server, &dialer).await?;
            match name {
                Some(name) => {
                    let reply = client
                        .get(pb::GetRequest {
                            key: Some(key(kind, &name, namespace, cluster)),
                            consistency,
                        })
                        .await?
                        .into_inner();
                    output::print_one(kind, &reply, format)?;
                }
                None => {
                    let reply = client
                        .list(pb::ListRequest {
                            kind: kind.to_string(),
                            namespace: namespace.unwrap_or_default(),
                            consistency,
                        })
                        .await?
                        .into_inner();
                    output::print_list(kind, &reply.items, format)?;
                }
            }
        }
        AdminCommand::Delete {
            kind,
            name,
            namespace,
            cluster,
        } => {
            let kind: Kind = kind.parse()?;
            let key = key(kind, &name, namespace, cluster);
            let mut request = tonic::Request::new(pb::DeleteRequest {
                key: Some(key),
                expected_revision: None,
            });
            telemetry::propagation::inject_grpc(&cx, &mut request);
            connect(server, &dialer).await?.delete(request).await?;
            outln!("{kind} {name} deleted");
            print_trace(&cx);
        }
        AdminCommand::Members { command } => {
            members(connect(server, &dialer).await?, command).await?
        }
        AdminCommand::Status {
            propagation: Some(revision),
            output: format,
        } => {
            let reply = connect(server, &dialer)
                .await?
                .propagation(pb::PropagationRequest { revision })
                .await?
                .into_inner();
            proxies::print_propagation(&reply, format)?;
        }
        AdminCommand::Status {
            propagation: None,
            output: format,
        } => {
            let status = connect(server, &dialer)
                .await?
                .status(pb::StatusRequest {})
                .await?
                .into_inner();
            output::print_status(&status, format)?;
        }
        AdminCommand::Explain {
            service,
            namespace,
            cluster,
            zone,
            output: format,
        } => {
            let service = match (namespace, service.contains('/')) {
                (Some(_), true) => bail!("give the namespace in SERVICE or with -n, not both"),
                (Some(namespace), false) => format!("{namespace}/{service}"),
                (None, _) => service,
            };
            let reply = connect(server, &dialer)
                .await?
                .explain(pb::ExplainRequest {
                    service,
                    cluster,
                    zone: zone.unwrap_or_default(),
                })
                .await?
                .into_inner();
            explain::print_explain(&reply, format)?;
        }
        AdminCommand::Tokens { command } => {
            tokens::run(connect(server, &dialer).await?, command).await?
        }
        AdminCommand::Enroll(_) | AdminCommand::Snapshot { .. } => {}
    }
    Ok(())
}

/// How the CLI dials `server` with the operator's TLS flags (plaintext only to loopback).
fn client_dialer(server: &str, tls: ClientTls) -> anyhow::Result<Dialer> {
    if tls.insecure {
        for addr in servers(server) {
            require_loopback("--server", addr)?;
        }
    }
    dialer(TlsFiles::select(
        tls.insecure,
        tls.cert,
        tls.key,
        tls.trust_bundle,
    )?)
}

async fn members(mut client: AdminClient<Channel>, command: MembersCommand) -> anyhow::Result<()> {
    let members = match command {
        MembersCommand::List { output: format } => {
            let reply = client
                .list_members(pb::ListMembersRequest {})
                .await?
                .into_inner();
            return output::print_members(&reply.members, format);
        }
        MembersCommand::Add {
            node_id,
            addr,
            voter,
        } => {
            let mut reply = client
                .add_learner(pb::AddLearnerRequest { node_id, addr })
                .await?
                .into_inner();
            if voter {
                reply = client
                    .promote_member(pb::PromoteMemberRequest { node_id })
                    .await?
                    .into_inner();
            }
            reply.members
        }
        MembersCommand::Promote { node_id } => {
            client
                .promote_member(pb::PromoteMemberRequest { node_id })
                .await?
                .into_inner()
                .members
        }
        MembersCommand::Remove { node_id } => {
            client
                .remove_member(pb::RemoveMemberRequest { node_id })
                .await?
                .into_inner()
                .members
        }
    };
    output::print_members(&members, Format::Table)
}

/// Writes every resource of `text` (YAML or JSON manifests) in one
/// all-or-nothing `Apply`; each resource comes back with its new revision.
pub(crate) async fn apply_manifests(
    client: &mut AdminClient<Channel>,
    text: &str,
    trace: &TraceContext,
) -> anyhow::Result<Vec<(meridian_model::Resource, u64)>> {
    let resources = parse_manifests(text)?;
    if resources.is_empty() {
        bail!("no resources found");
    }
    let puts = resources
        .iter()
        .map(|r| {
            Ok(pb::PutRequest {
                manifest_json: serde_json::to_string(r)?,
                expected_revision: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut request = tonic::Request::new(pb::ApplyRequest {
        puts,
        deletes: vec![],
    });
    telemetry::propagation::inject_grpc(trace, &mut request);
    let reply = client.apply(request).await?.into_inner();
    Ok(resources.into_iter().zip(reply.revisions).collect())
}

/// `trace ID` when the change was traced.
fn print_trace(cx: &TraceContext) {
    if let Some(id) = telemetry::propagation::trace_id(cx) {
        outln!("trace {id}");
    }
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
    }
}
