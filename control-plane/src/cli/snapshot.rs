//! `meridian snapshot save|restore|status`: back up the replicated state to a
//! file through any node, and build a new cluster's data dirs from it
//! offline, as `etcdctl snapshot save` and `etcdutl snapshot restore` do.

use crate::raft::{backup, restore::restore, snapshot_data::SnapshotData, NodeId};
use crate::server::config::parse_initial_cluster;
use anyhow::{bail, Context};
use clap::Subcommand;
use meridian_model::Kind;
use meridian_proto::v1::{self as pb, admin_client::AdminClient};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a consistent copy of the replicated state to FILE (admins only).
    Save {
        /// Where to write the snapshot (replaced atomically if it exists).
        file: PathBuf,
    },
    /// Create a new node's data dir from a snapshot file (offline; no server).
    ///
    /// Run it for every node of the new cluster, with the same file and
    /// --initial-cluster, then start each node with `meridian server` on its
    /// data dir.
    Restore {
        /// A file written by `meridian snapshot save`.
        file: PathBuf,
        /// The new node's data dir; it must not exist or be empty.
        #[arg(long, env = "MERIDIAN_DATA_DIR")]
        data_dir: PathBuf,
        /// The new node's id: one of --initial-cluster's.
        #[arg(long, env = "MERIDIAN_NODE_ID")]
        node_id: NodeId,
        /// The new cluster's members, `1=HOST:PORT,2=HOST:PORT,...`: its
        /// membership comes from here, not from the snapshot.
        #[arg(long, env = "MERIDIAN_INITIAL_CLUSTER")]
        initial_cluster: String,
    },
    /// Check a snapshot file and show what it holds (offline).
    Status {
        /// A file written by `meridian snapshot save`.
        file: PathBuf,
    },
}

/// Runs `command`; `connect` reaches a control-plane node, for `save` only.
pub async fn run(
    command: SnapshotCommand,
    connect: impl AsyncFnOnce() -> anyhow::Result<AdminClient<Channel>>,
) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Save { file } => save(connect().await?, &file).await?,
        SnapshotCommand::Status { file } => {
            let (data, checksum) = read(&file)?;
            print_summary(&file, &data, &checksum);
        }
        SnapshotCommand::Restore {
            file,
            data_dir,
            node_id,
            initial_cluster,
        } => {
            let members = members(node_id, &initial_cluster)?;
            let (data, _) = read(&file)?;
            restore(&data, &data_dir, &members)
                .await
                .with_context(|| format!("restoring {}", file.display()))?;
            outln!(
                "restored {} objects at index {} into {} for node {node_id} of a {}-node cluster",
                data.resources.len(),
                data.index(),
                data_dir.display(),
                members.len()
            );
        }
    }
    Ok(())
}

fn members(node_id: NodeId, text: &str) -> anyhow::Result<BTreeMap<NodeId, String>> {
    let members = parse_initial_cluster(text)?;
    if !members.contains_key(&node_id) {
        bail!("--initial-cluster does not name node {node_id}");
    }
    Ok(members)
}

/// A verified snapshot file and its checksum.
fn read(file: &Path) -> anyhow::Result<(SnapshotData, String)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let data = backup::decode(&bytes).with_context(|| format!("{}", file.display()))?;
    Ok((data, backup::checksum(&bytes)))
}

/// `save`: streams the snapshot, checks it, then writes it atomically.
async fn save(mut client: AdminClient<Channel>, file: &Path) -> anyhow::Result<()> {
    let mut stream = client.snapshot(pb::SnapshotRequest {}).await?.into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        bytes.extend_from_slice(&chunk.data);
    }
    let data = backup::decode(&bytes).context("the snapshot received")?;
    write_atomically(file, &bytes)?;
    print_summary(file, &data, &backup::checksum(&bytes));
    Ok(())
}

/// Writes `bytes` to a temporary file beside `file`, syncs it and renames it
/// over `file`: a crash leaves the old file or the new one, never half.
fn write_atomically(file: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .with_context(|| format!("{} names no file", file.display()))?;
    let temp = dir.join(format!(
        ".{}.part-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut out = std::fs::File::create(&temp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        std::fs::rename(&temp, file)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.with_context(|| format!("writing {}", file.display()))
}

fn print_summary(file: &Path, data: &SnapshotData, checksum: &str) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (resource, _) in data.parsed().unwrap_or_default() {
        *counts.entry(resource.kind().to_string()).or_default() += 1;
    }
    outln!("snapshot: {}", file.display());
    outln!("index:    {}", data.index());
    outln!("objects:  {}", data.resources.len());
    for kind in Kind::ALL {
        if let Some(count) = counts.get(&kind.to_string()) {
            outln!("  {kind}: {count}");
        }
    }
    outln!("sha256:   {checksum}");
}
