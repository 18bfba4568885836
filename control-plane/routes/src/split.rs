//! Traffic splits as a route sends them: a backend that is itself split is
//! replaced by its own backends, weights multiplied, so traffic goes to
//! services with endpoints and never to a split service's own (empty)
//! cluster.

use crate::{MeshState, ServiceId};
use meridian_model::{Resource, Spec};
use std::sync::Arc;

/// How deep splits are followed. The model refuses deeper nesting and
/// cycles at apply; this only bounds the walk should a state hold one.
const MAX_DEPTH: usize = 8;

/// Weights of a flattened nested split: parts of this whole.
const PARTS: f64 = 1_000_000.0;

/// A service's split, flattened.
#[derive(Debug)]
pub struct Flattened<'s> {
    /// Where the traffic goes, with weights: the split's own weights when
    /// no backend is split further, else parts per million of the whole.
    pub backends: Vec<(ServiceId, u32)>,
    /// Every split followed, the service's own first.
    pub splits: Vec<&'s Arc<Resource>>,
    /// The split services passed through on the way (not the service itself).
    pub via: Vec<ServiceId>,
}

/// The split of `id` flattened, or `None` when the service is not split.
pub fn flatten<'s>(state: &'s MeshState, id: &ServiceId) -> Option<Flattened<'s>> {
    let top = state.split_for(id)?;
    let mut flattened = Flattened {
        backends: Vec::new(),
        splits: Vec::new(),
        via: Vec::new(),
    };
    let mut shares: Vec<(ServiceId, f64)> = Vec::new();
    expand(state, top, 1.0, 0, &mut shares, &mut flattened);
    if flattened.splits.len() == 1 {
        // Nothing nested: the split's own weights, as written.
        flattened.backends = backends(top).filter(|(_, weight)| *weight > 0).collect();
        return Some(flattened);
    }
    for (service, share) in shares {
        let parts = (share * PARTS).round() as u32;
        match flattened.backends.iter_mut().find(|(s, _)| *s == service) {
            Some((_, weight)) => *weight += parts,
            None if parts > 0 => flattened.backends.push((service, parts)),
            None => {}
        }
    }
    Some(flattened)
}

/// A split's backends, resolved against its namespace.
fn backends(split: &Resource) -> impl Iterator<Item = (ServiceId, u32)> + '_ {
    let namespace = split.metadata.namespace.as_deref().unwrap_or_default();
    let list = match &split.spec {
        Spec::TrafficSplit(s) => s.backends.as_slice(),
        _ => &[],
    };
    list.iter()
        .map(move |b| (ServiceId::parse(&b.service, namespace), b.weight))
}

/// Adds the services `split` sends its `share` of the traffic to.
fn expand<'s>(
    state: &'s MeshState,
    split: &'s Arc<Resource>,
    share: f64,
    depth: usize,
    shares: &mut Vec<(ServiceId, f64)>,
    flattened: &mut Flattened<'s>,
) {
    flattened.splits.push(split);
    let total: u64 = backends(split).map(|(_, w)| u64::from(w)).sum();
    if total == 0 {
        return;
    }
    for (backend, weight) in backends(split).filter(|(_, w)| *w > 0) {
        let backend_share = share * f64::from(weight) / total as f64;
        match state.split_for(&backend) {
            Some(nested) if depth < MAX_DEPTH => {
                flattened.via.push(backend);
                expand(state, nested, backend_share, depth + 1, shares, flattened)
            }
            _ => shares.push((backend, backend_share)),
        }
    }
}
