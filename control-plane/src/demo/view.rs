//! What the demo shows: a live frame for a terminal, a plain progress line
//! otherwise. Pure: it formats, the caller prints.

use super::{control::ClusterState, mesh::CLUSTERS, traffic::Window};
use std::{fmt::Write, time::Duration};

/// One proxy's traffic over the last second.
pub struct ProxyRow<'a> {
    pub name: &'a str,
    pub last_second: &'a Window,
    pub route_version: Option<&'a str>,
}

pub struct Frame<'a> {
    pub elapsed: Duration,
    pub step: &'a str,
    pub state: &'a ClusterState,
    pub proxies: Vec<ProxyRow<'a>>,
    /// What happened so far, oldest first.
    pub narration: &'a [String],
    /// Commands to try in another terminal.
    pub hints: &'a [String],
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn short(version: Option<&str>) -> &str {
    match version {
        Some(v) => v.get(..12).unwrap_or(v),
        None => "-",
    }
}

/// The control plane in one line: the leader, and each node's role and
/// applied index (or that it does not answer).
fn control_plane_line(state: &ClusterState) -> String {
    let mut line = match state.leader() {
        Some(leader) => format!("leader node-{leader}"),
        None => "no leader (election)".to_string(),
    };
    if let Some(term) = state
        .nodes
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .map(|s| s.term)
        .max()
    {
        let _ = write!(line, " (term {term})");
    }
    for (id, status) in &state.nodes {
        match status {
            Some(s) => {
                let _ = write!(line, " · node-{id} {} applied {}", s.state, s.applied_index);
            }
            None => {
                let _ = write!(line, " · node-{id} down");
            }
        }
    }
    line
}

/// The share of answers from each cluster, in the clusters' order.
fn cluster_shares(window: &Window) -> String {
    CLUSTERS
        .iter()
        .map(|c| {
            format!(
                "{} {:>4}",
                c.name,
                percent(window.share(&format!("{}/", c.name)))
            )
        })
        .collect::<Vec<_>>()
        .join("  ")
}

/// The frame for a terminal, redrawn in place.
pub fn live(frame: &Frame) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Meridian demo: 3 control-plane nodes, 2 clusters in 2 regions, 2 proxies   {:>6.1} s",
        frame.elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "{}\n", frame.step);
    let _ = writeln!(out, "control plane  {}\n", control_plane_line(frame.state));
    let _ = writeln!(
        out,
        "{:<12} {:>6} {:>7}  {:<24} route version",
        "proxy", "req/s", "failed", "answered from"
    );
    for row in &frame.proxies {
        let _ = writeln!(
            out,
            "{:<12} {:>6} {:>7}  {:<24} {}",
            row.name,
            row.last_second.total(),
            row.last_second.failed,
            cluster_shares(row.last_second),
            short(row.route_version)
        );
    }
    let _ = writeln!(out, "\nshare per endpoint (last second)");
    for row in &frame.proxies {
        let endpoints = row
            .last_second
            .ok
            .keys()
            .map(|name| format!("{name} {}", percent(row.last_second.share(name))))
            .collect::<Vec<_>>()
            .join("  ");
        let _ = writeln!(out, "{:<12} {endpoints}", row.name);
    }
    let _ = writeln!(out, "\nwhat happened");
    for line in frame.narration.iter().rev().take(12).rev() {
        let _ = writeln!(out, "  {line}");
    }
    if !frame.hints.is_empty() {
        let _ = writeln!(out, "\nin another terminal");
        for hint in frame.hints {
            let _ = writeln!(out, "  {hint}");
        }
    }
    out
}

/// One progress line, for a pipe or a log.
pub fn line(frame: &Frame) -> String {
    let mut out = format!(
        "[{:>6.1} s] {}",
        frame.elapsed.as_secs_f64(),
        control_plane_line(frame.state)
    );
    for row in &frame.proxies {
        let _ = write!(
            out,
            " | {} {} req/s, {}, failed {}",
            row.name,
            row.last_second.total(),
            cluster_shares(row.last_second),
            row.last_second.failed
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_proto::v1 as pb;

    fn window(answers: &[(&str, u64)], failed: u64) -> Window {
        Window {
            ok: answers.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
            failed,
            last_error: None,
        }
    }

    #[test]
    fn a_frame_shows_leader_shares_and_failures() {
        let state = ClusterState {
            nodes: vec![
                (1, None),
                (
                    2,
                    Some(pb::StatusResponse {
                        leader: Some(2),
                        term: 4,
                        state: "leader".into(),
                        applied_index: 57,
                        ..Default::default()
                    }),
                ),
            ],
            proxies: vec![],
        };
        let east = window(&[("west/checkout-v1/a", 3), ("east/checkout-v1/a", 1)], 2);
        let frame = Frame {
            elapsed: Duration::from_millis(12_500),
            step: "step 2 of 4",
            state: &state,
            proxies: vec![ProxyRow {
                name: "east-proxy",
                last_second: &east,
                route_version: Some("0123456789abcdef"),
            }],
            narration: &["killed east's upstreams".to_string()],
            hints: &[],
        };
        let line = line(&frame);
        assert!(
            line.starts_with("[  12.5 s] leader node-2 (term 4)"),
            "{line}"
        );
        assert!(line.contains("node-1 down"), "{line}");
        assert!(
            line.contains("east-proxy 6 req/s, east  25%  west  75%, failed 2"),
            "{line}"
        );
        let live = live(&frame);
        assert!(
            live.contains("0123456789ab\n"),
            "versions are shortened: {live}"
        );
        assert!(live.contains("west/checkout-v1/a 75%"), "{live}");
        assert!(live.contains("killed east's upstreams"), "{live}");
    }
}
