//! Random edits of a valid input, for the property tests that stand in for
//! `cargo fuzz` (`decoders_no_panic`): a few bytes inserted, replaced or
//! removed at random places, so that most inputs get past a parser's first
//! check and into what follows it; and JSON documents built from a format's
//! own field names, to get past the parser into validation. One copy for
//! every crate's tests; only test code depends on it.

use proptest::{collection::SizeRange, prelude::*};

/// One edit of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit {
    /// Where, taken modulo the input's length at the time.
    pub at: usize,
    pub byte: u8,
    pub how: How,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Insert,
    Replace,
    Remove,
}

/// Lists of `count` edits anywhere in an input.
pub fn edits(count: impl Into<SizeRange>) -> impl Strategy<Value = Vec<Edit>> {
    let how = prop_oneof![Just(How::Insert), Just(How::Replace), Just(How::Remove)];
    let edit =
        (any::<usize>(), any::<u8>(), how).prop_map(|(at, byte, how)| Edit { at, byte, how });
    prop::collection::vec(edit, count)
}

/// `input` with `edits` applied in order; an edit of an empty input inserts.
pub fn mutate(input: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for edit in edits {
        if bytes.is_empty() {
            bytes.push(edit.byte);
            continue;
        }
        let at = edit.at % bytes.len();
        match edit.how {
            How::Insert => bytes.insert(at, edit.byte),
            How::Replace => bytes[at] = edit.byte,
            How::Remove => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

/// [`mutate`] for text decoders: invalid UTF-8 becomes U+FFFD, as a
/// reader of bytes into a `String` would make it.
pub fn mutate_text(input: &str, edits: &[Edit]) -> String {
    String::from_utf8_lossy(&mutate(input.as_bytes(), edits)).into_owned()
}

/// JSON values whose objects take their keys from `fields` and whose
/// leaves come from `scalar`: nested a few levels, as a document of the
/// format would be, with values of every type where it expects one.
pub fn documents(
    fields: &'static [&'static str],
    scalar: impl Strategy<Value = serde_json::Value> + 'static,
) -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Map, Value};
    scalar.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(fields), inner), 0..6).prop_map(
                |entries| {
                    let map: Map<String, Value> = entries
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect();
                    Value::Object(map)
                }
            ),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_insert_replace_and_remove() {
        let edit = |at, byte, how| Edit { at, byte, how };
        assert_eq!(mutate(b"abc", &[edit(1, b'x', How::Insert)]), b"axbc");
        assert_eq!(mutate(b"abc", &[edit(4, b'x', How::Replace)]), b"axc");
        assert_eq!(mutate(b"abc", &[edit(2, 0, How::Remove)]), b"ab");
        assert_eq!(mutate(b"", &[edit(7, b'x', How::Remove)]), b"x");
        assert_eq!(
            mutate_text("ab", &[edit(0, 0xff, How::Replace)]),
            "\u{fffd}b"
        );
    }
}
