//! The responses of both ADS variants as the node builds them: the fields
//! and numbers of Envoy's `DiscoveryResponse` and `DeltaDiscoveryResponse`,
//! with the compiled resources themselves in place of copies. Each
//! resource is shared with the compiled output and every stream sending it,
//! and encoded straight from there into the stream's frame: a stream used
//! to copy every resource's bytes into a response of its own first (an
//! `Any` each), then encode that copy.
//!
//! Decoding one gives the resources without their names and versions for
//! state of the world (the wire carries none), as a client sees them.

use super::fields::{nested_len, put_text, text_len};
use bytes::{Buf, BufMut};
use meridian_routes::XdsResource;
use prost::encoding::{
    encode_key, encode_varint, message, skip_field, string, DecodeContext, WireType,
};
use std::sync::Arc;

/// `DiscoveryResponse`: version_info 1, resources 2, type_url 4, nonce 5.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SotwResponse {
    pub version_info: String,
    pub resources: Vec<Arc<XdsResource>>,
    pub type_url: String,
    pub nonce: String,
}

/// `DeltaDiscoveryResponse`: system_version_info 1, resources 2 (each a
/// `Resource`: version 1, resource 2, name 3), type_url 4, nonce 5,
/// removed_resources 6.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeltaResponse {
    pub system_version_info: String,
    pub resources: Vec<Arc<XdsResource>>,
    pub type_url: String,
    pub nonce: String,
    pub removed_resources: Vec<String>,
}

/// A delta `Resource`'s body: its version, the resource, its name.
fn delta_resource_len(resource: &XdsResource) -> usize {
    text_len(1, &resource.version)
        + message::encoded_len(2, &resource.resource)
        + text_len(3, &resource.name)
}

impl prost::Message for SotwResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_text(1, &self.version_info, buf);
        for resource in &self.resources {
            message::encode(2, &resource.resource, buf);
        }
        put_text(4, &self.type_url, buf);
        put_text(5, &self.nonce, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => string::merge(wire_type, &mut self.version_info, buf, ctx),
            2 => {
                let mut resource = XdsResource {
                    name: "".into(),
                    version: "".into(),
                    resource: Default::default(),
                };
                message::merge(wire_type, &mut resource.resource, buf, ctx)?;
                self.resources.push(Arc::new(resource));
                Ok(())
            }
            4 => string::merge(wire_type, &mut self.type_url, buf, ctx),
            5 => string::merge(wire_type, &mut self.nonce, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        text_len(1, &self.version_info)
            + self
                .resources
                .iter()
                .map(|r| message::encoded_len(2, &r.resource))
                .sum::<usize>()
            + text_len(4, &self.type_url)
            + text_len(5, &self.nonce)
    }

    fn clear(&mut self) {
        *self = SotwResponse::default();
    }
}

impl prost::Message for DeltaResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_text(1, &self.system_version_info, buf);
        for resource in &self.resources {
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(delta_resource_len(resource) as u64, buf);
            put_text(1, &resource.version, buf);
            message::encode(2, &resource.resource, buf);
            put_text(3, &resource.name, buf);
        }
        put_text(4, &self.type_url, buf);
        put_text(5, &self.nonce, buf);
        for name in &self.removed_resources {
            put_text(6, name, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        use envoy_types::pb::envoy::service::discovery::v3::Resource;
        match tag {
            1 => string::merge(wire_type, &mut self.system_version_info, buf, ctx),
            2 => {
                let mut resource = Resource::default();
                message::merge(wire_type, &mut resource, buf, ctx)?;
                self.resources.push(Arc::new(XdsResource {
                    name: resource.name.into(),
                    version: resource.version.into(),
                    resource: resource.resource.unwrap_or_default(),
                }));
                Ok(())
            }
            4 => string::merge(wire_type, &mut self.type_url, buf, ctx),
            5 => string::merge(wire_type, &mut self.nonce, buf, ctx),
            6 => string::merge_repeated(wire_type, &mut self.removed_resources, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        text_len(1, &self.system_version_info)
            + self
                .resources
                .iter()
                .map(|r| nested_len(2, delta_resource_len(r)))
                .sum::<usize>()
            + text_len(4, &self.type_url)
            + text_len(5, &self.nonce)
            + self
                .removed_resources
                .iter()
                .map(|n| text_len(6, n))
                .sum::<usize>()
    }

    fn clear(&mut self) {
        *self = DeltaResponse::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource,
    };
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    fn resources() -> Vec<Arc<XdsResource>> {
        [("a", "v1", 3), ("b", "v2", 300), ("c", "", 0)]
            .into_iter()
            .map(|(name, version, size)| {
                Arc::new(XdsResource {
                    name: name.into(),
                    version: version.into(),
                    resource: Any {
                        type_url: "type.googleapis.com/t".into(),
                        value: vec![7; size],
                    },
                })
            })
            .collect()
    }

    #[test]
    fn a_state_of_the_world_response_is_the_bytes_envoys_message_has() {
        for (version_info, nonce, resources) in [("3", "9", resources()), ("", "", Vec::new())] {
            let ours = SotwResponse {
                version_info: version_info.into(),
                resources: resources.clone(),
                type_url: "t".into(),
                nonce: nonce.into(),
            };
            let envoys = DiscoveryResponse {
                version_info: version_info.into(),
                resources: resources.iter().map(|r| r.resource.clone()).collect(),
                type_url: "t".into(),
                nonce: nonce.into(),
                ..Default::default()
            };
            let bytes = ours.encode_to_vec();
            assert_eq!(bytes, envoys.encode_to_vec());
            assert_eq!(ours.encoded_len(), bytes.len());
            let decoded = SotwResponse::decode(&bytes[..]).expect("decodes");
            assert_eq!(decoded.version_info, ours.version_info);
            let anys: Vec<&Any> = decoded.resources.iter().map(|r| &r.resource).collect();
            assert_eq!(anys, envoys.resources.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_delta_response_is_the_bytes_envoys_message_has() {
        let ours = DeltaResponse {
            system_version_info: "12".into(),
            resources: resources(),
            type_url: "t".into(),
            nonce: "4".into(),
            removed_resources: vec!["gone".into(), "also".into()],
        };
        let envoys = DeltaDiscoveryResponse {
            system_version_info: "12".into(),
            resources: resources()
                .iter()
                .map(|r| Resource {
                    name: r.name.to_string(),
                    version: r.version.to_string(),
                    resource: Some(r.resource.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: "t".into(),
            nonce: "4".into(),
            removed_resources: vec!["gone".into(), "also".into()],
            ..Default::default()
        };
        let bytes = ours.encode_to_vec();
        assert_eq!(bytes, envoys.encode_to_vec());
        assert_eq!(ours.encoded_len(), bytes.len());
        assert_eq!(DeltaResponse::decode(&bytes[..]).expect("decodes"), ours);
    }
}
