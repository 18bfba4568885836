//! A state-of-the-world request as the server decodes it: Envoy's
//! `DiscoveryRequest` (the same fields and numbers, so any client's
//! request decodes), with its resource names kept in one buffer rather
//! than a `String` each. A client answers every response with all the
//! names it subscribes to, usually the same as before; they are compared
//! with the subscription in place and copied only when they differ.

use super::fields::{nested_len, put_text, text_len};
use envoy_types::pb::{envoy::config::core::v3::Node, google::rpc::Status};
use prost::{
    bytes::{Buf, BufMut},
    encoding::{message, skip_field, string, DecodeContext, WireType},
};

/// `envoy.service.discovery.v3.DiscoveryRequest`, decoded for the server.
/// Fields the server does not read (`resource_locators`) are skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SotwRequest {
    pub version_info: String,
    pub node: Option<Node>,
    pub resource_names: Names,
    pub type_url: String,
    pub response_nonce: String,
    pub error_detail: Option<Status>,
}

/// Resource names, in the order the client sent them, in one buffer.
#[derive(Debug, Clone, Default)]
pub struct Names {
    joined: String,
    /// Where each name ends in `joined`.
    ends: Vec<usize>,
    /// Where the name being decoded goes first (checked as UTF-8), kept
    /// so decoding allocates per request, not per name.
    scratch: String,
}

impl PartialEq for Names {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Names {
    pub fn iter(&self) -> impl Iterator<Item = &str> + Clone {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.joined[start..end])
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn push(&mut self, name: &str) {
        self.joined.push_str(name);
        self.ends.push(self.joined.len());
    }
}

impl<S: AsRef<str>> FromIterator<S> for Names {
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Self {
        let mut all = Names::default();
        for name in names {
            all.push(name.as_ref());
        }
        all
    }
}

const VERSION_INFO: u32 = 1;
const NODE: u32 = 2;
const RESOURCE_NAMES: u32 = 3;
const TYPE_URL: u32 = 4;
const RESPONSE_NONCE: u32 = 5;
const ERROR_DETAIL: u32 = 6;

impl prost::Message for SotwRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_text(VERSION_INFO, &self.version_info, buf);
        if let Some(node) = &self.node {
            message::encode(NODE, node, buf);
        }
        for name in self.resource_names.iter() {
            // Each name, empty or not, is an entry of the list.
            prost::encoding::encode_key(RESOURCE_NAMES, WireType::LengthDelimited, buf);
            prost::encoding::encode_varint(name.len() as u64, buf);
            buf.put_slice(name.as_bytes());
        }
        put_text(TYPE_URL, &self.type_url, buf);
        put_text(RESPONSE_NONCE, &self.response_nonce, buf);
        if let Some(error) = &self.error_detail {
            message::encode(ERROR_DETAIL, error, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            VERSION_INFO => string::merge(wire_type, &mut self.version_info, buf, ctx),
            NODE => message::merge(
                wire_type,
                self.node.get_or_insert_with(Node::default),
                buf,
                ctx,
            ),
            RESOURCE_NAMES => {
                let names = &mut self.resource_names;
                let mut name = std::mem::take(&mut names.scratch);
                string::merge(wire_type, &mut name, buf, ctx)?;
                names.push(&name);
                names.scratch = name;
                Ok(())
            }
            TYPE_URL => string::merge(wire_type, &mut self.type_url, buf, ctx),
            RESPONSE_NONCE => string::merge(wire_type, &mut self.response_nonce, buf, ctx),
            ERROR_DETAIL => message::merge(
                wire_type,
                self.error_detail.get_or_insert_with(Status::default),
                buf,
                ctx,
            ),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let names: usize = self
            .resource_names
            .iter()
            .map(|name| nested_len(RESOURCE_NAMES, name.len()))
            .sum();
        text_len(VERSION_INFO, &self.version_info)
            + self
                .node
                .as_ref()
                .map_or(0, |n| message::encoded_len(NODE, n))
            + names
            + text_len(TYPE_URL, &self.type_url)
            + text_len(RESPONSE_NONCE, &self.response_nonce)
            + self
                .error_detail
                .as_ref()
                .map_or(0, |e| message::encoded_len(ERROR_DETAIL, e))
    }

    fn clear(&mut self) {
        *self = SotwRequest::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use prost::Message;

    fn envoys() -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: "7-00ff".into(),
            node: Some(Node {
                id: "proxy-1".into(),
                cluster: "east".into(),
                ..Default::default()
            }),
            resource_names: vec!["b.shop".into(), "a.shop".into(), "".into(), "ü.shop".into()],
            type_url: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment".into(),
            response_nonce: "12".into(),
            error_detail: Some(Status {
                code: 3,
                message: "bad".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn an_envoy_request_decodes_with_every_field_and_encodes_back_the_same() {
        let sent = envoys();
        let bytes = sent.encode_to_vec();
        let got = SotwRequest::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(got.version_info, sent.version_info);
        assert_eq!(got.node, sent.node);
        assert_eq!(
            got.resource_names.iter().collect::<Vec<_>>(),
            ["b.shop", "a.shop", "", "ü.shop"]
        );
        assert_eq!(got.resource_names.len(), 4);
        assert_eq!(got.type_url, sent.type_url);
        assert_eq!(got.response_nonce, sent.response_nonce);
        assert_eq!(got.error_detail, sent.error_detail);
        assert_eq!(got.encoded_len(), bytes.len());
        assert_eq!(got.encode_to_vec(), bytes);
    }

    #[test]
    fn a_name_that_is_not_utf8_is_refused() {
        let mut bytes = DiscoveryRequest {
            resource_names: vec!["ab".into()],
            ..Default::default()
        }
        .encode_to_vec();
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        assert!(SotwRequest::decode(bytes.as_slice()).is_err());
    }

    proptest::proptest! {
        /// Whatever bytes arrive, decoding gives a request or an error,
        /// never a panic; what decodes as Envoy's request decodes here too,
        /// with the same names.
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let ours = SotwRequest::decode(bytes.as_slice());
            if let Ok(envoy) = DiscoveryRequest::decode(bytes.as_slice()) {
                let ours = ours.expect("Envoy's request decodes here too");
                proptest::prop_assert!(ours.resource_names.iter().eq(envoy.resource_names.iter().map(String::as_str)));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_names_come_back_as_sent(names in proptest::collection::vec(".{0,12}", 0..20), nonce in ".{0,4}") {
            let sent = DiscoveryRequest {
                resource_names: names.clone(),
                response_nonce: nonce,
                ..envoys()
            };
            let got = SotwRequest::decode(sent.encode_to_vec().as_slice()).expect("decodes");
            proptest::prop_assert!(got.resource_names.iter().eq(names.iter().map(String::as_str)));
            proptest::prop_assert_eq!(&got.response_nonce, &sent.response_nonce);
            proptest::prop_assert_eq!(got.encode_to_vec(), sent.encode_to_vec());
        }
    }

    #[test]
    fn a_truncated_request_is_refused() {
        let bytes = envoys().encode_to_vec();
        for cut in [1, bytes.len() - 1] {
            assert!(SotwRequest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
