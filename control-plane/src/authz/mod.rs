//! Authorization of every gRPC call by the caller's SPIFFE ID.

mod layer;
mod policy;

pub use layer::{caller_of, refused, AuthzLayer};
pub use policy::{may_stream_endpoints, may_subscribe, Caller, Refusal};
