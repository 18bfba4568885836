//! A node whose disk fails under it: it fills up, or the file system turns
//! read-only (as ext4 does on an I/O error with `errors=remount-ro`). Its
//! Raft storage fails, so it stops being ready and exits (its proxies and
//! agents move to a healthy node) rather than serve frozen routes while
//! reporting ready; the others go on, and once the disk is repaired it
//! recovers from its own data dir. The data dirs sit on a small tmpfs or a
//! loop-mounted ext4 image the test makes (the tests run as root, as CI
//! does).

use meridian_proto::v1::Consistency;
use meridian_tests::{
    agreed_leader, cli, eventually, start_cluster, workload::read, ServerNode, ServerOptions,
};
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

const WAIT: Duration = Duration::from_secs(60);

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Self {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            mounted,
            "mounting a tmpfs at {} failed: the disk tests need root, as CI has",
            dir.display()
        );
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

/// Fills the file system holding `dir` until it has no space left.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(dir.join("ballast")).expect("ballast file");
    let chunk = vec![0u8; 1 << 20];
    // Bounded: the tmpfs is small, and a write fails once it is full.
    for _ in 0..4_096 {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = file.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_stops_being_ready_and_exits() {
    let root = tempfile::tempdir().expect("temp dir");
    let disk = root.path().join("disk");
    std::fs::create_dir(&disk).expect("mount point");
    // Room for the node's two recycled write-ahead log files (16 MiB each)
    // and its tables, before the ballast takes the rest.
    let _tmpfs = Tmpfs::mount(&disk, "64m");
    let mut nodes = start_cluster(&disk, 1, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let node = &nodes[0];
    let cluster = "kind: Cluster\nmetadata: {name: before}\nspec: {region: r1}\n";
    assert!(cli(&node.grpc, &["apply", "-f", "-"], Some(cluster)).ok);

    fill(&disk);
    // Large writes outgrow the space the node's write-ahead log files
    // already hold (16 MiB a log, `raft/store.rs`): the next log's tables
    // find no room, storage now fails, and the node must not go on as if
    // nothing happened.
    let endpoints: Vec<String> = (0..10_000)
        .map(|i| format!("{{address: 10.9.{}.{}, port: 80}}", i / 256, i % 256))
        .collect();
    for i in 0..200 {
        let text = format!(
            "kind: Endpoints\nmetadata: {{name: web{i}, namespace: shop, cluster: before}}\nspec: {{endpoints: [{}]}}\n",
            endpoints.join(", ")
        );
        if !cli(&node.grpc, &["apply", "-f", "-"], Some(&text)).ok {
            break;
        }
    }
    let node = &mut nodes[0];
    eventually(WAIT, "the node to exit on its storage failure", || {
        let exited = node.exited();
        async move { exited.then_some(()) }
    })
    .await;
    let log = node.log_tail(40);
    assert!(log.contains("raft stopped on a fatal error"), "{log}");
}

/// Runs a command the disk tests need, failing the test with its output.
fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/setup installs e2fsprogs)"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An ext4 file system in an image file, loop-mounted with
/// `errors=remount-ro`; unmounted on drop.
struct Ext4 {
    image: PathBuf,
    dir: PathBuf,
}

impl Ext4 {
    fn create(image: PathBuf, dir: PathBuf, megabytes: u64) -> Self {
        let file = std::fs::File::create(&image).expect("image file");
        file.set_len(megabytes << 20).expect("image size");
        run("mkfs.ext4", &["-q", "-F", &image.display().to_string()]);
        std::fs::create_dir_all(&dir).expect("mount point");
        let ext4 = Ext4 { image, dir };
        ext4.mount();
        ext4
    }

    fn mount(&self) {
        run(
            "mount",
            &[
                "-o",
                "loop,errors=remount-ro",
                &self.image.display().to_string(),
                &self.dir.display().to_string(),
            ],
        );
    }

    fn unmount(&self) {
        run("umount", &[&self.dir.display().to_string()]);
    }

    /// What the kernel does on an I/O error: an ext4 error, after which the
    /// file system is read-only for everyone, open files included.
    fn fail(&self) {
        let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
        let dir = self.dir.display().to_string();
        let device = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(dir.as_str()))
            .and_then(|l| l.split(' ').next())
            .and_then(|d| d.strip_prefix("/dev/"))
            .unwrap_or_else(|| panic!("{dir} is not mounted"))
            .to_string();
        std::fs::write(format!("/sys/fs/ext4/{device}/trigger_fs_error"), "1")
            .expect("trigger an ext4 error");
    }

    /// What an operator does before mounting it again: check and repair.
    fn repair(&self) {
        // e2fsck exits 1 when it fixed something: that is the point.
        let status = Command::new("e2fsck")
            .args(["-f", "-y", &self.image.display().to_string()])
            .output()
            .expect("e2fsck");
        assert!(
            matches!(status.status.code(), Some(0 | 1)),
            "e2fsck: {}",
            String::from_utf8_lossy(&status.stdout)
        );
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Applies cluster `name` through any of `nodes` that takes it (a leader
/// may be on its way out); returns once one acknowledged it.
async fn write_acknowledged(nodes: &[&ServerNode], name: &str) {
    let manifest = format!("kind: Cluster\nmetadata: {{name: {name}}}\nspec: {{region: {name}}}\n");
    eventually(WAIT, &format!("{name} acknowledged"), || async {
        nodes
            .iter()
            .any(|n| cli(&n.grpc, &["apply", "-f", "-"], Some(&manifest)).ok)
            .then_some(())
    })
    .await;
}

/// `Some` once `node` holds cluster `name` in its own copy.
async fn holds(node: &ServerNode, name: &str) -> Option<()> {
    let mut client = node.client().await?;
    (read(&mut client, name, Consistency::Stale).await == Some(Some(name.to_string())))
        .then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_turns_read_only_exits_and_recovers_from_its_disk() {
    let root = tempfile::tempdir().expect("temp dir");
    // Node 3's data dir is where start_cluster puts it, on an ext4 image
    // (sparse; roomy, as RocksDB preallocates its log: ~75 MiB).
    let disk = Ext4::create(
        root.path().join("node-3.img"),
        root.path().join("node-3"),
        512,
    );
    let mut nodes = start_cluster(root.path(), 3, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    write_acknowledged(&nodes.iter().collect::<Vec<_>>(), "before").await;
    eventually(WAIT, "node 3 to hold the first write", || {
        holds(&nodes[2], "before")
    })
    .await;

    disk.fail();
    // Writes go on through the two healthy nodes (node 3 may have led).
    let healthy: Vec<&ServerNode> = nodes[..2].iter().collect();
    let written: Vec<String> = (0..20).map(|i| format!("during-{i}")).collect();
    for name in &written {
        write_acknowledged(&healthy, name).await;
    }
    let failed = &mut nodes[2];
    eventually(WAIT, "node 3 to exit on its storage failure", || {
        let exited = failed.exited();
        async move { exited.then_some(()) }
    })
    .await;
    let log = failed.log_tail(40);
    assert!(log.contains("raft stopped on a fatal error"), "{log}");

    // Repaired, it starts on what its disk kept and catches up.
    disk.unmount();
    disk.repair();
    disk.mount();
    nodes[2].start();
    for name in written.iter().chain(std::iter::once(&"before".to_string())) {
        eventually(WAIT, &format!("node 3 to hold {name}"), || {
            holds(&nodes[2], name)
        })
        .await;
    }
    for node in &nodes[..2] {
        let mut client = node.client().await.expect("a healthy node");
        for name in &written {
            assert_eq!(
                read(&mut client, name, Consistency::Linearizable).await,
                Some(Some(name.clone())),
                "an acknowledged write on node {}",
                node.id
            );
        }
    }
}
