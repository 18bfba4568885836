//! What the two ADS variants share: subscriptions, ACK/NACK feedback, nonces.

use std::collections::BTreeSet;

/// The most names one request may subscribe to; more is refused as malformed.
pub const MAX_NAMES_PER_REQUEST: usize = 10_000;

/// What a client's request said about earlier responses.
#[derive(Debug, Clone, PartialEq)]
pub enum Feedback {
    Ack { type_url: String, version: String },
    Nack { type_url: String, version: String, error: String },
}

/// Which resources of one type a stream wants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subscription {
    pub wildcard: bool,
    pub names: BTreeSet<String>,
}

impl Subscription {
    pub fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
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
