//! A node whose disk fills up: its Raft storage fails, so it stops being
//! ready and exits (its proxies and agents move to a healthy node) rather
//! than serve frozen routes while reporting ready. The data dir sits on a
//! small tmpfs the test mounts (the tests run as root, as CI does).

use meridian_tests::{agreed_leader, cli, eventually, start_cluster, ServerOptions};
use std::{path::Path, process::Command, time::Duration};

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
    let _tmpfs = Tmpfs::mount(&disk, "32m");
    let mut nodes = start_cluster(&disk, 1, ServerOptions::default());
    agreed_leader(&nodes.iter().collect::<Vec<_>>()).await;
    let node = &nodes[0];
    let cluster = "kind: Cluster\nmetadata: {name: before}\nspec: {region: r1}\n";
    assert!(cli(&node.grpc, &["apply", "-f", "-"], Some(cluster)).ok);

    fill(&disk);
    // Large writes outgrow the log's preallocated space: storage now fails,
    // and the node must not go on as if nothing happened.
    let endpoints: Vec<String> = (0..3_000)
        .map(|i| format!("{{address: 10.9.{}.{}, port: 80}}", i / 256, i % 256))
        .collect();
    for i in 0..40 {
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
