//! Protobuf string fields written and measured as prost does for proto3
//! (an empty one left out), for the node's own ADS messages: from `&str`,
//! so names and versions shared as `Arc<str>` need no `String` of their own.

use prost::bytes::BufMut;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

/// The bytes of a length-delimited field of `len` bytes.
pub fn nested_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The bytes of string field `tag` holding `value`: none when it is empty.
pub fn text_len(tag: u32, value: &str) -> usize {
    match value.is_empty() {
        true => 0,
        false => nested_len(tag, value.len()),
    }
}

/// Writes string field `tag` holding `value`, unless it is empty.
pub fn put_text(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.put_slice(value.as_bytes());
    }
}
