//! Meridian's replicated resource model: the kinds operators and agents write,
//! how their manifests parse, how they are validated, and how a batch of
//! writes is planned against the current state.
//!
//! Everything here is pure: no I/O, no async, no storage engine. The control
//! plane's state machine asks [`plan`] what to write and carries it out.

mod agent;
mod command_id;
mod duration;
mod error;
mod key;
mod kind;
mod manifest;
mod meta;
mod names;
mod nesting;
mod plan;
mod references;
mod resource;
pub mod spec;

pub use command_id::CommandId;
pub use duration::Duration;
pub use error::{ModelError, Rejection, RejectionCode};
pub use key::ResourceKey;
pub use kind::Kind;
pub use manifest::{parse_manifests, Manifest};
pub use meta::Metadata;
pub use names::check_label;
pub use nesting::MAX_SPLIT_DEPTH;
pub use plan::{plan, plan_each, Command, Op, Planned, StateView, Write};
pub use references::check_references;
pub use resource::{Resource, Spec, Status};
