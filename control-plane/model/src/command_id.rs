//! The id of a command that may reach the log more than once.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// 128 random bits, written as 32 hexadecimal digits: a JSON number that
/// large would not survive serde's buffering of untagged enums (the log
/// store's entry format), nor most JSON readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u128);

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl Serialize for CommandId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CommandId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() != 32 {
            return Err(de::Error::custom("a command id has 32 hexadecimal digits"));
        }
        u128::from_str_radix(&text, 16)
            .map(CommandId)
            .map_err(|_| de::Error::custom("a command id has 32 hexadecimal digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_as_written_even_inside_an_untagged_enum() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(untagged)]
        enum Either {
            Id { id: CommandId },
            Other(String),
        }
        let id = CommandId(u128::MAX - 5);
        let json = serde_json::to_string(&Either::Id { id }).expect("encode");
        assert_eq!(json, r#"{"id":"fffffffffffffffffffffffffffffffa"}"#);
        let read: Either = serde_json::from_str(&json).expect("decode");
        assert_eq!(read, Either::Id { id });
        for bad in [r#""12""#, r#""zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz""#, "12"] {
            assert!(serde_json::from_str::<CommandId>(bad).is_err(), "{bad}");
        }
    }
}
