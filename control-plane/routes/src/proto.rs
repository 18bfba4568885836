//! Small builders for the protobuf pieces every resource uses.

use envoy_types::pb::{
    envoy::config::core::v3::{
        address, config_source::ConfigSourceSpecifier, socket_address::PortSpecifier,
        AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress,
    },
    google::protobuf::{Any, Duration, UInt32Value},
};
use prost::{Message, Name};

pub fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub fn u32_value(value: u32) -> UInt32Value {
    UInt32Value { value }
}

pub fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// "Fetch this over the same ADS stream."
pub fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

pub fn socket_address(ip: &str, port: u16) -> envoy_types::pb::envoy::config::core::v3::Address {
    envoy_types::pb::envoy::config::core::v3::Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}
