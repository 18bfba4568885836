//! Federation: where Meridian's view of the world comes from. Discovery
//! sources (Kubernetes, static file, HTTP service discovery) behind one
//! trait, each yielding the endpoint sets of one cluster, and the agent that
//! streams them to the control plane as a snapshot and then batched deltas.

pub mod agent;
pub mod sources;
pub mod view;

pub use sources::{Source, SourceSpec, SourceUpdate};
pub use view::{diff, Delta, ServiceName, View};
