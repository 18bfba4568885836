//! Where one stream's proxy stands, per resource type: what it was sent,
//! what it ACKed, since when it has been behind, what it refused, and the
//! mesh revision it holds. Pure: the stream loop reports what it sent and
//! what the proxy answered, with the revision of the mesh snapshot at hand.
//!
//! The rule for "holds revision N": a type is held through the newest
//! snapshot revision at which the stream found the proxy's ACKed content
//! current. An update of the mesh that changes nothing of a type sends
//! nothing, and so moves that type forward without an answer from the
//! proxy; a type whose content changed is held through the new revision
//! only once the proxy ACKs it. A proxy holds N when every type does.

use super::{by_type::ByType, protocol::Feedback};
use meridian_proto::v1::{Proxy, ProxyTypeStatus};

/// One type's standing.
#[derive(Debug, Clone, Default, PartialEq)]
struct TypeStanding {
    /// The last response sent, and the newest revision its content is current for.
    sent: Option<(String, u64)>,
    /// The last version ACKed, and the newest revision it is known current for.
    acked: Option<(String, u64)>,
    /// Responses not answered yet.
    outstanding: usize,
    /// The last answer was a NACK and nothing was sent since.
    refused: bool,
    /// The last NACK: version, error, when (Unix ms).
    nack: Option<(String, String, u64)>,
    /// When the proxy fell behind (Unix ms).
    behind_since: Option<u64>,
}

impl TypeStanding {
    fn in_step(&self) -> bool {
        self.outstanding == 0 && !self.refused
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Standing {
    /// State of the world: a response replaces the unanswered ones before
    /// it (only the latest is answered). Delta: each is answered in turn.
    supersedes: bool,
    types: ByType<TypeStanding>,
    /// The type of the last NACK.
    last_nack: Option<String>,
}

// === impl Standing ===

impl Standing {
    pub fn new(supersedes: bool) -> Self {
        Standing {
            supersedes,
            types: ByType::default(),
            last_nack: None,
        }
    }

    /// A response of `type_url` at `version`, compiled from the mesh at
    /// `revision`, goes to the proxy.
    pub fn sent(&mut self, type_url: &str, version: &str, revision: u64, now_ms: u64) {
        let state = self.types.entry(type_url);
        state.sent = Some((version.to_string(), revision));
        state.outstanding = if self.supersedes {
            1
        } else {
            state.outstanding + 1
        };
        state.refused = false;
        state.behind_since.get_or_insert(now_ms);
    }

    /// The stream compared every type it serves with the mesh at
    /// `revision` and sent responses for the types in `sent` (already
    /// reported with [`Standing::sent`]): the others' content is current
    /// at `revision` too, and a proxy in step with them holds it.
    pub fn evaluated(&mut self, revision: u64, sent: &[&str]) {
        for (type_url, state) in self.types.iter_mut() {
            if sent.contains(&type_url.as_str()) {
                continue;
            }
            let in_step = state.in_step();
            if let Some((_, current)) = &mut state.sent {
                *current = (*current).max(revision);
            }
            if let (true, Some((_, held))) = (in_step, &mut state.acked) {
                *held = (*held).max(revision);
            }
        }
    }

    /// The proxy answered. `revision` is the mesh revision at hand: what
    /// an ACK of a version never sent on this stream (a client that
    /// reconnects holding the current version) is current for.
    pub fn answered(&mut self, feedback: &Feedback, revision: u64, now_ms: u64) {
        let (Feedback::Ack { type_url, .. } | Feedback::Nack { type_url, .. }) = feedback;
        let supersedes = self.supersedes;
        let state = self.types.entry(type_url);
        state.outstanding = match supersedes {
            true => 0,
            false => state.outstanding.saturating_sub(1),
        };
        match feedback {
            Feedback::Ack { version, .. } => {
                let sent = state
                    .sent
                    .get_or_insert_with(|| (version.clone(), revision))
                    .clone();
                let held = match (&state.acked, state.in_step()) {
                    // Everything sent is held, through the newest revision it is current for.
                    (_, true) => sent.1,
                    // An older response of several (delta): what was held stays held.
                    (Some((_, held)), false) => *held,
                    (None, false) => 0,
                };
                state.acked = Some((version.clone(), held));
                if state.in_step() {
                    state.behind_since = None;
                }
            }
            Feedback::Nack { version, error, .. } => {
                state.refused = true;
                state.nack = Some((version.clone(), error.clone(), now_ms));
                state.behind_since.get_or_insert(now_ms);
                self.last_nack = Some(type_url.clone());
            }
        }
    }

    /// The newest revision the proxy holds for every type (0: nothing held
    /// yet): what `held_revision` gives of its report, as the tests read it.
    #[cfg(test)]
    pub fn revision(&self) -> u64 {
        self.types
            .values()
            .map(|t| t.acked.as_ref().map(|(_, held)| *held).unwrap_or(0))
            .min()
            .unwrap_or(0)
    }

    /// Fills in the proxy's listing: every type's standing, the version
    /// ACKed last per type, and the last NACK. (The revision it holds
    /// comes from the listed types, once `as_listed` has moved them on.)
    pub fn describe(&self, proxy: &mut Proxy) {
        proxy.types = self.report();
        proxy.acked_versions = self
            .types
            .iter()
            .filter_map(|(type_url, t)| Some((type_url.clone(), t.acked.as_ref()?.0.clone())))
            .collect();
        let last_nack = self.last_nack.as_ref().and_then(|type_url| {
            let (version, error, _) = self.types.get(type_url)?.nack.clone()?;
            Some((type_url.clone(), version, error))
        });
        if let Some((type_url, version, error)) = last_nack {
            proxy.last_nack_type_url = type_url;
            proxy.last_nack_version = version;
            proxy.last_nack_error = error;
        }
    }

    /// Every type's standing, as the admin API lists it.
    pub fn report(&self) -> Vec<ProxyTypeStatus> {
        self.types
            .iter()
            .map(|(type_url, t)| {
                let (sent_version, sent_revision) = t.sent.clone().unwrap_or_default();
                let (acked_version, acked_revision) = t.acked.clone().unwrap_or_default();
                let (nack_version, nack_error, nack_unix_ms) = t.nack.clone().unwrap_or_default();
                ProxyTypeStatus {
                    type_url: type_url.clone(),
                    sent_version,
                    sent_revision,
                    acked_version,
                    acked_revision,
                    behind_since_unix_ms: t.behind_since.unwrap_or(0),
                    behind_ms: 0,
                    nack_version,
                    nack_error,
                    nack_unix_ms,
                    rejected: t.refused,
                }
            })
            .collect()
    }
}

/// A proxy's standing as its node lists it at `now_ms`: how long each type
/// has been behind, and, for a proxy in step with the node's latest mesh
/// snapshot (at `mesh_revision`), the revision through which that
/// snapshot's routes stand unchanged (`through`: changes that route
/// nothing, such as bootstrap tokens, move it without a push).
pub fn as_listed(types: &mut [ProxyTypeStatus], now_ms: u64, mesh_revision: u64, through: u64) {
    for t in types {
        if t.behind_since_unix_ms > 0 {
            t.behind_ms = now_ms.saturating_sub(t.behind_since_unix_ms);
        } else if t.acked_revision >= mesh_revision && !t.acked_version.is_empty() {
            t.acked_revision = t.acked_revision.max(through);
        }
    }
}

/// The revision a proxy holds for every type, from its listed types.
pub fn held_revision(types: &[ProxyTypeStatus]) -> u64 {
    types.iter().map(|t| t.acked_revision).min().unwrap_or(0)
}

/// Where a proxy stands against one revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Every type ACKed and current through the revision.
    Holds,
    /// Not sent yet, or sent and not answered.
    Pending,
    /// A type's last response, current at or after the revision, was refused.
    Rejected,
}

/// Whether a proxy with these types holds `revision`, has yet to, or refused it.
pub fn propagation(types: &[ProxyTypeStatus], revision: u64) -> Propagation {
    if !types.is_empty() && held_revision(types) >= revision {
        return Propagation::Holds;
    }
    let refused = types
        .iter()
        .any(|t| t.rejected && t.acked_revision < revision && t.sent_revision >= revision);
    match refused {
        true => Propagation::Rejected,
        false => Propagation::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CDS: &str = "cds";
    const EDS: &str = "eds";

    fn ack(type_url: &str, version: &str) -> Feedback {
        Feedback::Ack {
            type_url: type_url.into(),
            version: version.into(),
        }
    }

    fn nack(type_url: &str, version: &str) -> Feedback {
        Feedback::Nack {
            type_url: type_url.into(),
            version: version.into(),
            error: "bad".into(),
        }
    }

    fn of<'a>(report: &'a [ProxyTypeStatus], type_url: &str) -> &'a ProxyTypeStatus {
        report
            .iter()
            .find(|t| t.type_url == type_url)
            .expect("type reported")
    }

    /// A state-of-the-world stream that got and ACKed both types at 5.
    fn in_step_at_5() -> Standing {
        let mut s = Standing::new(true);
        s.sent(CDS, "5-a", 5, 1_000);
        s.sent(EDS, "5-b", 5, 1_000);
        s.evaluated(5, &[CDS, EDS]);
        s.answered(&ack(CDS, "5-a"), 5, 1_100);
        s.answered(&ack(EDS, "5-b"), 5, 1_100);
        s
    }

    #[test]
    fn an_ack_of_everything_sent_holds_its_revision() {
        let s = in_step_at_5();
        assert_eq!(s.revision(), 5);
        let report = s.report();
        assert_eq!(of(&report, CDS).behind_since_unix_ms, 0);
        assert_eq!(of(&report, CDS).acked_version, "5-a");
        assert_eq!(propagation(&report, 5), Propagation::Holds);
        assert_eq!(propagation(&report, 6), Propagation::Pending);
    }

    #[test]
    fn a_type_that_did_not_change_moves_forward_without_a_push() {
        let mut s = in_step_at_5();
        // Revision 7 changes endpoints only: EDS goes out, CDS stays.
        s.sent(EDS, "7-c", 7, 2_000);
        s.evaluated(7, &[EDS]);
        let report = s.report();
        assert_eq!(of(&report, CDS).acked_revision, 7);
        assert_eq!(of(&report, EDS).acked_revision, 5);
        assert_eq!(of(&report, EDS).behind_since_unix_ms, 2_000);
        assert_eq!(s.revision(), 5, "EDS at 7 is not ACKed yet");
        s.answered(&ack(EDS, "7-c"), 7, 2_050);
        assert_eq!(s.revision(), 7);
        assert_eq!(propagation(&s.report(), 7), Propagation::Holds);
    }

    #[test]
    fn content_sent_and_unchanged_since_is_held_through_the_newest_revision_once_acked() {
        let mut s = in_step_at_5();
        s.sent(CDS, "7-c", 7, 2_000);
        s.evaluated(7, &[CDS]);
        // Revision 9 leaves clusters as sent at 7, still unanswered.
        s.evaluated(9, &[]);
        assert_eq!(s.revision(), 5);
        s.answered(&ack(CDS, "7-c"), 9, 2_100);
        assert_eq!(s.revision(), 9);
    }

    #[test]
    fn a_proxy_that_stops_answering_stays_behind_and_pending() {
        let mut s = in_step_at_5();
        s.sent(CDS, "8-d", 8, 3_000);
        s.evaluated(8, &[CDS]);
        s.sent(CDS, "9-e", 9, 4_000);
        s.evaluated(9, &[CDS]);
        let report = s.report();
        assert_eq!(of(&report, CDS).sent_version, "9-e");
        assert_eq!(of(&report, CDS).acked_version, "5-a");
        assert_eq!(
            of(&report, CDS).behind_since_unix_ms,
            3_000,
            "behind since the first response it left unanswered"
        );
        assert_eq!(propagation(&report, 8), Propagation::Pending);
        assert_eq!(propagation(&report, 5), Propagation::Holds);
    }

    #[test]
    fn a_nack_rejects_the_revision_and_later_ones_until_something_new_is_sent() {
        let mut s = in_step_at_5();
        s.sent(CDS, "8-d", 8, 3_000);
        s.evaluated(8, &[CDS]);
        s.answered(&nack(CDS, "8-d"), 8, 3_010);
        // Revision 9 changes nothing of clusters: the refused content stands.
        s.evaluated(9, &[]);
        let report = s.report();
        let cds = of(&report, CDS);
        assert!(cds.rejected);
        assert_eq!(
            (cds.nack_version.as_str(), cds.nack_error.as_str()),
            ("8-d", "bad")
        );
        assert_eq!(cds.acked_revision, 5, "the proxy keeps what it held");
        assert_eq!(propagation(&report, 8), Propagation::Rejected);
        assert_eq!(propagation(&report, 9), Propagation::Rejected);
        assert_eq!(propagation(&report, 5), Propagation::Holds);
        // A new version goes out: pending again, the NACK kept for the record.
        s.sent(CDS, "10-f", 10, 5_000);
        s.evaluated(10, &[CDS]);
        let report = s.report();
        assert_eq!(propagation(&report, 10), Propagation::Pending);
        assert_eq!(of(&report, CDS).nack_version, "8-d");
        s.answered(&ack(CDS, "10-f"), 10, 5_010);
        assert_eq!(propagation(&s.report(), 10), Propagation::Holds);
    }

    #[test]
    fn delta_waits_for_every_response_to_be_answered() {
        let mut s = Standing::new(false);
        s.sent(CDS, "3", 3, 100);
        s.sent(CDS, "4", 4, 200);
        s.answered(&ack(CDS, "3"), 4, 300);
        assert_eq!(s.revision(), 0, "the response at 4 is still out");
        assert_eq!(of(&s.report(), CDS).behind_since_unix_ms, 100);
        s.answered(&ack(CDS, "4"), 4, 400);
        assert_eq!(s.revision(), 4);
        // A refused response, then an ACKed one sent before the refusal was
        // answered: what was refused is not held.
        s.sent(CDS, "6", 6, 500);
        s.sent(CDS, "7", 7, 600);
        s.answered(&nack(CDS, "6"), 7, 700);
        s.answered(&ack(CDS, "7"), 7, 800);
        assert_eq!(s.revision(), 4);
    }

    #[test]
    fn a_reconnect_acked_without_a_push_holds_the_revision_at_hand() {
        let mut s = Standing::new(true);
        s.answered(&ack(CDS, "5-a"), 6, 100);
        assert_eq!(s.revision(), 6);
        assert_eq!(of(&s.report(), CDS).sent_version, "5-a");
    }

    #[test]
    fn listing_measures_lag_and_carries_a_current_proxy_through_unrouted_changes() {
        let mut s = in_step_at_5();
        s.sent(EDS, "7-c", 7, 2_000);
        s.evaluated(7, &[EDS]);
        let mut types = s.report();
        as_listed(&mut types, 2_500, 7, 9);
        assert_eq!(of(&types, EDS).behind_ms, 500);
        assert_eq!(of(&types, CDS).acked_revision, 9);
        assert_eq!(of(&types, EDS).acked_revision, 5);
        assert_eq!(held_revision(&types), 5);

        let mut current = in_step_at_5().report();
        as_listed(&mut current, 2_500, 5, 8);
        assert_eq!(propagation(&current, 8), Propagation::Holds);
        let mut older = in_step_at_5().report();
        as_listed(&mut older, 2_500, 6, 8);
        assert_eq!(
            propagation(&older, 8),
            Propagation::Pending,
            "not in step with the node's latest snapshot"
        );
    }
}
