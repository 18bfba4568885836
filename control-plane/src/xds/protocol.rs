//! What the two ADS variants share: subscriptions, ACK/NACK feedback, nonces.

use envoy_types::pb::envoy::config::core::v3::Node;
use meridian_routes::{type_url, Compiled};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A protocol variant's per-stream state: what the stream loop drives.
pub trait AdsProtocol: Default + Send + 'static {
    type Request: prost::Message + Default + Send + 'static;
    type Response: prost::Message + Send + 'static;
    /// "sotw" or "delta", as listed for connected proxies.
    const NAME: &'static str;
    /// Whether a response replaces the unanswered ones of its type (state
    /// of the world: the client answers only the latest) or each response
    /// is answered in turn (delta).
    const SUPERSEDES: bool;

    fn node(request: &Self::Request) -> Option<&Node>;
    /// How many resource names the request carries, to refuse oversized ones.
    fn names_count(request: &Self::Request) -> usize;
    fn on_request(
        &mut self,
        request: Self::Request,
        compiled: &Arc<Compiled>,
        system_version: &str,
    ) -> (Option<Self::Response>, Option<Feedback>);
    fn on_update(&mut self, compiled: &Arc<Compiled>, system_version: &str) -> Vec<Self::Response>;
    /// What the stream holds state for: (type URLs, names subscribed across them).
    fn subscribed(&self) -> (usize, usize);
    /// What a response sends: its type URL, version and how many resources
    /// it carries (added and removed).
    fn sent(response: &Self::Response) -> (&str, &str, usize);
}

/// The most names one request may subscribe to; more is refused as malformed.
pub const MAX_NAMES_PER_REQUEST: usize = 10_000;

/// About how many bytes of resources one response carries, where the
/// protocol lets a type's resources be sent in parts (every type in delta;
/// all but listeners and clusters in state of the world): a client's first
/// view (every endpoint of every cluster, say) goes out in several
/// responses, each answered before the next, so no stream's encode buffer
/// grows to the size of the whole view and stays that size.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The most type URLs one stream may ask for (four are Meridian's; an Envoy
/// may ask for a few more, which get empty answers).
pub const MAX_TYPES_PER_STREAM: usize = 16;
/// The most names one stream may hold subscribed, across its requests.
pub const MAX_NAMES_PER_STREAM: usize = 100_000;

/// How many types a stream holds state for, and how many names it
/// subscribes to across them.
pub fn footprint<'a>(
    subscriptions: impl ExactSizeIterator<Item = &'a Subscription>,
) -> (usize, usize) {
    let types = subscriptions.len();
    (types, subscriptions.map(|s| s.names.len()).sum())
}

/// Refuses a stream whose subscriptions outgrow the limits, so one client
/// cannot grow its node's memory without bound.
pub fn check_subscriptions(types: usize, names: usize) -> Result<(), String> {
    if types > MAX_TYPES_PER_STREAM {
        return Err(format!(
            "a stream may ask for at most {MAX_TYPES_PER_STREAM} resource types, this one asked for {types}"
        ));
    }
    if names > MAX_NAMES_PER_STREAM {
        return Err(format!(
            "a stream may subscribe to at most {MAX_NAMES_PER_STREAM} resources, this one subscribed to {names}"
        ));
    }
    Ok(())
}

/// What a client's request said about earlier responses.
#[derive(Debug, Clone, PartialEq)]
pub enum Feedback {
    Ack {
        type_url: String,
        version: String,
    },
    Nack {
        type_url: String,
        version: String,
        error: String,
    },
}

/// Which resources of one type a stream wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subscription {
    pub wildcard: bool,
    /// Each name shared with the compiled resource of that name where
    /// there was one when it was subscribed: every stream of a locality
    /// names the same resources, so they hold pointers, not copies.
    pub names: BTreeSet<Arc<str>>,
}

impl Subscription {
    /// Every resource of the type.
    #[cfg(test)]
    pub fn wildcard() -> Subscription {
        Subscription {
            wildcard: true,
            ..Default::default()
        }
    }

    /// What a request's `resource_names` ask for: `*` or, for listeners
    /// and clusters, no names at all, is every resource.
    pub fn asked_by<'a>(
        names: impl Iterator<Item = &'a str> + Clone,
        type_url: &str,
        compiled: &Compiled,
    ) -> Self {
        let mut asked = Subscription {
            wildcard: Self::wildcard_in(names.clone(), type_url),
            ..Default::default()
        };
        asked.add(names.filter(|n| *n != "*"), type_url, compiled);
        asked
    }

    /// Subscribes to `names`, each sharing the compiled resource's copy of
    /// the name if `compiled` has one.
    pub fn add<'a>(
        &mut self,
        names: impl Iterator<Item = &'a str>,
        type_url: &str,
        compiled: &Compiled,
    ) {
        let added: Vec<Arc<str>> = names
            .filter(|name| !self.names.contains(*name))
            .map(|name| {
                compiled
                    .get_shared(type_url, name)
                    .map_or_else(|| name.into(), |r| r.name.clone())
            })
            .collect();
        if self.names.is_empty() {
            // Built at once, the set's nodes are full; inserted one by one
            // in order, each is left half empty (twice the memory).
            self.names = added.into_iter().collect();
        } else {
            self.names.extend(added);
        }
    }

    /// Whether `names`, in ascending order, ask for exactly this: one walk,
    /// nothing copied. False for names out of order or repeated, which may
    /// still ask for the same (compare with `asked_by` then).
    pub fn is_asked_by<'a>(
        &self,
        names: impl Iterator<Item = &'a str> + Clone,
        type_url: &str,
    ) -> bool {
        self.wildcard == Self::wildcard_in(names.clone(), type_url)
            && names
                .filter(|n| *n != "*")
                .eq(self.names.iter().map(|n| &**n))
    }

    fn wildcard_in<'a>(mut names: impl Iterator<Item = &'a str> + Clone, type_url: &str) -> bool {
        let none = names.clone().next().is_none();
        names.any(|n| n == "*") || (none && type_url::is_full_state(type_url))
    }

    pub fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// The entries of `all` (resources by name) this subscription wants, in
    /// name order: a walk of both sorted sets side by side for named
    /// subscriptions, two comparisons a name, not a tree search each.
    pub fn chosen<'s, 'a: 's, V>(
        &'s self,
        all: &'a BTreeMap<String, V>,
    ) -> impl Iterator<Item = (&'a String, &'a V)> + 's {
        let mut wanted = SortedWalk::new(self.names.iter().map(|n| &**n));
        all.iter()
            .filter(move |(name, _)| self.wildcard || wanted.contains(name))
    }
}

/// Membership in a set of names given in ascending order, asked about names
/// in ascending order too: both walked side by side, two comparisons a
/// name, not a tree search each.
pub struct SortedWalk<'a, I: Iterator<Item = &'a str>>(std::iter::Peekable<I>);

impl<'a, I: Iterator<Item = &'a str>> SortedWalk<'a, I> {
    pub fn new(names: I) -> Self {
        SortedWalk(names.peekable())
    }

    /// Whether `name` is in the set; no smaller than the last name asked about.
    pub fn contains(&mut self, name: &str) -> bool {
        while self.0.next_if(|n| *n < name).is_some() {}
        self.0.next_if(|n| *n == name).is_some()
    }
}

/// Nonces unique within a stream.
#[derive(Debug, Default)]
pub struct Nonces(u64);

impl Nonces {
    pub fn next(&mut self) -> String {
        self.0 += 1;
        self.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_chooses_the_names_it_wants_that_exist() {
        let all: BTreeMap<String, u32> = ["b", "d", "f", "h"]
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), i as u32))
            .collect();
        let named = |names: &[&str]| Subscription {
            wildcard: false,
            names: names.iter().map(|n| Arc::from(*n)).collect(),
        };
        let chosen =
            |s: &Subscription| -> Vec<String> { s.chosen(&all).map(|(n, _)| n.clone()).collect() };
        assert_eq!(chosen(&Subscription::wildcard()), ["b", "d", "f", "h"]);
        assert_eq!(chosen(&named(&["a", "d", "e", "h", "z"])), ["d", "h"]);
        assert_eq!(chosen(&named(&["b", "c", "f"])), ["b", "f"]);
        assert!(chosen(&named(&["a", "c", "i"])).is_empty());
        assert!(chosen(&named(&[])).is_empty());
        for name in ["a", "b", "c", "d", "h", "i"] {
            let one = named(&[name]);
            let by_lookup: Vec<String> = all.keys().filter(|n| one.wants(n)).cloned().collect();
            assert_eq!(chosen(&one), by_lookup, "{name}");
        }
    }
}

#[cfg(test)]
pub mod fixtures {
    use meridian_model::parse_manifests;
    use meridian_routes::{compile, Compiled, MeshState, ProxyLocality};
    use std::sync::Arc;

    /// The mesh with `checkout`'s port set to `port` (so tests can make a change) at `revision`; the rest at 1.
    pub fn compiled(port: u16, revision: u64) -> Arc<Compiled> {
        compiled_at(port, revision, 1)
    }

    /// As `compiled`, with `cart` at `cart_revision`.
    pub fn compiled_at(port: u16, revision: u64, cart_revision: u64) -> Arc<Compiled> {
        let text = format!(
            "kind: Cluster\nmetadata: {{name: c1}}\nspec: {{region: r1, zone: z1}}\n---\nkind: Service\nmetadata: {{name: checkout, namespace: shop}}\nspec: {{protocol: http, port: {port}}}\n---\nkind: Service\nmetadata: {{name: cart, namespace: shop}}\nspec: {{protocol: grpc, port: 9000}}\n---\nkind: Endpoints\nmetadata: {{name: checkout, namespace: shop, cluster: c1}}\nspec: {{endpoints: [{{address: 10.0.0.1, port: 80}}]}}\n"
        );
        let resources = parse_manifests(&text)
            .expect("valid")
            .into_iter()
            .map(|mut r| {
                r.metadata.revision = Some(match r.metadata.name.as_str() {
                    "checkout" => revision,
                    "cart" => cart_revision,
                    _ => 1,
                });
                r
            });
        Arc::new(for_c1(resources))
    }

    /// A mesh whose services' load assignments are together far over one
    /// response's byte budget.
    pub fn large_mesh() -> Arc<Compiled> {
        large_mesh_of(20)
    }

    /// The first `services` of [`large_mesh`]'s services, the same resources.
    pub fn large_mesh_of(services: usize) -> Arc<Compiled> {
        let mut text =
            String::from("kind: Cluster\nmetadata: {name: c1}\nspec: {region: r1, zone: z1}\n");
        for service in 0..services {
            text.push_str(&format!(
                "---\nkind: Service\nmetadata: {{name: s{service}, namespace: shop}}\nspec: {{protocol: http, port: 8080}}\n---\nkind: Endpoints\nmetadata: {{name: s{service}, namespace: shop, cluster: c1}}\nspec:\n  endpoints:\n"
            ));
            for i in 0..500 {
                text.push_str(&format!(
                    "  - {{address: 10.{service}.{}.{}, port: 8080}}\n",
                    i / 200,
                    i % 200
                ));
            }
        }
        let resources = parse_manifests(&text)
            .expect("valid")
            .into_iter()
            .map(|mut r| {
                r.metadata.revision = Some(1);
                r
            });
        Arc::new(for_c1(resources))
    }

    /// Step `step` of a changing mesh: s0..s3 always, one of them with an
    /// endpoint more each step; s4 only at even steps.
    pub fn stepped(step: u64) -> Compiled {
        let mut text = String::from("kind: Cluster\nmetadata: {name: c1}\nspec: {region: r1}\n");
        let services = if step.is_multiple_of(2) { 5 } else { 4 };
        for service in 0..services {
            let count = 1 + if service == step % 4 { step } else { 0 };
            text.push_str(&format!(
                "---\nkind: Service\nmetadata: {{name: s{service}, namespace: shop}}\nspec: {{protocol: http, port: 80}}\n---\nkind: Endpoints\nmetadata: {{name: s{service}, namespace: shop, cluster: c1}}\nspec:\n  endpoints:\n"
            ));
            for i in 0..count {
                text.push_str(&format!("  - {{address: 10.0.{service}.{i}, port: 80}}\n"));
            }
        }
        let resources = parse_manifests(&text)
            .expect("valid")
            .into_iter()
            .map(|mut r| {
                // Written when last changed: the unchanged services at 1.
                let changed = r.metadata.name == format!("s{}", step % 4);
                r.metadata.revision = Some(if changed { step } else { 1 });
                r
            });
        for_c1(resources)
    }

    /// What a proxy in cluster c1 is sent, given these resources.
    fn for_c1(resources: impl IntoIterator<Item = meridian_model::Resource>) -> Compiled {
        compile(
            &MeshState::from_resources(resources),
            &ProxyLocality {
                cluster: "c1".into(),
                ..Default::default()
            },
        )
    }
}
