//! `meridian certs`: a CA and certificates on disk, keys private, nothing overwritten.

use meridian_tests::binary;
use std::{os::unix::fs::PermissionsExt, process::Command};

fn meridian(args: &[&str]) -> (bool, String) {
    let output = Command::new(binary("meridian"))
        .args(args)
        .output()
        .expect("run meridian");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn creates_a_ca_and_issues_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("ca");
    let ca_dir = ca.to_str().expect("utf-8");
    let (ok, out) = meridian(&[
        "certs",
        "create-ca",
        "--trust-domain",
        "mesh.example",
        "--dir",
        ca_dir,
    ]);
    assert!(ok, "{out}");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("file").permissions().mode() & 0o777;
    assert_eq!(
        mode(&ca.join("ca.key")),
        0o600,
        "the CA key is readable by its owner only"
    );

    let node = dir.path().join("node-1");
    let node_prefix = node.to_str().expect("utf-8");
    let (ok, out) = meridian(&[
        "certs",
        "issue",
        "--ca-dir",
        ca_dir,
        "--node",
        "1",
        "--dns",
        "node-1.mesh.example",
        "--out",
        node_prefix,
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("spiffe://mesh.example/node/1"), "{out}");
    assert_eq!(mode(&node.with_extension("key")), 0o600);
    assert!(std::fs::read_to_string(node.with_extension("pem"))
        .expect("cert")
        .contains("BEGIN CERTIFICATE"));

    let agent = dir.path().join("agent");
    let (ok, out) = meridian(&[
        "certs",
        "issue",
        "--ca-dir",
        ca_dir,
        "--agent",
        "--cluster",
        "us-east-1a",
        "--out",
        agent.to_str().expect("utf-8"),
    ]);
    assert!(
        ok && out.contains("spiffe://mesh.example/cluster/us-east-1a/agent"),
        "{out}"
    );

    // Nothing is overwritten, and a certificate must say whom it is for.
    let (ok, out) = meridian(&[
        "certs",
        "create-ca",
        "--trust-domain",
        "mesh.example",
        "--dir",
        ca_dir,
    ]);
    assert!(!ok && out.contains("must not exist"), "{out}");
    let (ok, out) = meridian(&["certs", "issue", "--ca-dir", ca_dir, "--out", node_prefix]);
    assert!(!ok && out.contains("say who"), "{out}");
    let (ok, out) = meridian(&[
        "certs",
        "create-ca",
        "--trust-domain",
        "Bad Domain",
        "--dir",
        dir.path().join("x").to_str().expect("utf-8"),
    ]);
    assert!(!ok && out.contains("trust domain"), "{out}");
}
