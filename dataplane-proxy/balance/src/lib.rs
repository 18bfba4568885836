//! Load-balancer selection for `meridian-proxy`, after Envoy's model: hosts
//! grouped by locality into priorities; traffic spills from a priority to the
//! next as its healthy share drops below 1/overprovisioning; within a
//! priority, localities by weight; within those, hosts by the policy (round
//! robin, random, least request, ring hash, Maglev).
//!
//! Synchronous and pure: randomness, hashes and in-flight counts come in as
//! arguments, so every choice is testable and reproducible.

mod hash;
mod health;
mod maglev;
pub mod outlier;
mod pick;
mod priority;
mod ring;

pub use hash::hash64;
pub use health::{HealthTracker, Thresholds};
pub use outlier::{Outcome, OutlierPolicy, OutlierTracker, Verdict};
pub use pick::{Balancer, Host, HostId, Locality, PickContext, Policy};
pub use priority::{priority_health, priority_loads};
