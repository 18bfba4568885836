//! Authorization of every gRPC call by the caller's SPIFFE ID.

mod layer;
mod policy;

pub use layer::{caller_in, caller_of, is_member, refused, AuthzLayer};
pub use policy::{authorize, may_stream_endpoints, may_subscribe, node_is_member, Caller, Refusal};
