//! `meridian demo` plays its whole scenario, as CI runs it (no terminal:
//! plain output): three control-plane nodes, two clusters with agents,
//! upstreams and proxies, all real processes. Its summary must show the
//! failover, no failed request while the local endpoints died or while the
//! Raft leader died, traffic back after recovery, and nothing left behind.

use meridian_tests::binary;
use std::process::Command;

/// The summary line of one step (`summary` is followed by one line per step).
fn summary_line<'a>(stdout: &'a str, step: &str) -> &'a str {
    let summary = stdout
        .split("\nsummary\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary in the demo's output:\n{stdout}"));
    summary
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with(step))
        .unwrap_or_else(|| panic!("no '{step}' line in the summary:\n{summary}"))
}

/// Every process running in `dir` (the demo starts each of its processes
/// there) or naming it on its command line.
fn processes_in(dir: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let cwd = std::fs::read_link(path.join("cwd")).unwrap_or_default();
            let cmdline = std::fs::read(path.join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cwd.starts_with(dir) || cmdline.contains(dir)).then_some(cmdline)
        })
        .collect()
}

#[test]
fn the_demo_fails_over_without_losing_a_request_and_cleans_up() {
    let output = Command::new(binary("meridian"))
        .args(["demo", "--duration", "40s"])
        .env_remove("MERIDIAN_SERVER")
        .output()
        .expect("running meridian demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the demo failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        !stdout.contains("\x1b["),
        "without a terminal the demo prints plain lines"
    );

    let steady = summary_line(&stdout, "steady:");
    assert!(steady.contains(" 0 failed requests"), "{steady}");
    let failure = summary_line(&stdout, "endpoint failure:");
    assert!(
        failure.contains("traffic moved to the other region within"),
        "{failure}"
    );
    assert!(failure.contains(" 0 failed requests"), "{failure}");
    let leader = summary_line(&stdout, "leader kill:");
    assert!(leader.contains("elected in"), "{leader}");
    assert!(
        leader.contains("a write committed") && leader.contains("caught up"),
        "{leader}"
    );
    assert!(leader.contains(" 0 failed requests"), "{leader}");
    let recovery = summary_line(&stdout, "recovery:");
    assert!(recovery.contains("traffic back on east"), "{recovery}");

    // Nothing left behind: the temporary directory, nor any process started
    // in it.
    let dir = stdout
        .lines()
        .find_map(|line| line.strip_prefix("stopped every process and removed "))
        .unwrap_or_else(|| panic!("the demo did not say it cleaned up:\n{stdout}"))
        .trim();
    assert!(!std::path::Path::new(dir).exists(), "{dir} is still there");
    let left = processes_in(dir);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
