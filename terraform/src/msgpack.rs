//! Terraform's wire form of values (`DynamicValue`): MessagePack read and
//! written against a known [`Type`], an unknown value being an extension
//! (type 0; Terraform 1.6 and later send refined unknowns as type 12), or
//! JSON, which Terraform may send for state it stored.

use crate::value::{Type, Value};
use rmpv::Value as Mp;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
#[error("cannot decode a value from Terraform: {0}")]
pub struct DecodeError(String);

/// A `DynamicValue` as Terraform sent it: MessagePack, else JSON, else null.
pub fn decode_dynamic(msgpack: &[u8], json: &[u8], ty: &Type) -> Result<Value, DecodeError> {
    if !msgpack.is_empty() {
        return decode(msgpack, ty);
    }
    if !json.is_empty() {
        let json: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| DecodeError(e.to_string()))?;
        return Ok(Value::from_json(ty, &json));
    }
    Ok(Value::Null)
}

pub fn decode(bytes: &[u8], ty: &Type) -> Result<Value, DecodeError> {
    let mut reader = bytes;
    let raw = rmpv::decode::read_value(&mut reader).map_err(|e| DecodeError(e.to_string()))?;
    from_mp(raw, ty)
}

fn from_mp(raw: Mp, ty: &Type) -> Result<Value, DecodeError> {
    let mismatch = |what: &str| DecodeError(format!("expected {ty:?}, got {what}"));
    Ok(match (ty, raw) {
        (_, Mp::Nil) => Value::Null,
        (_, Mp::Ext(_, _)) => Value::Unknown,
        (Type::Bool, Mp::Boolean(b)) => Value::Bool(b),
        (Type::Number, Mp::Integer(i)) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Value::number(u),
            (None, Some(i)) => Value::number(i),
            _ => return Err(mismatch("an integer out of range")),
        },
        (Type::Number, Mp::F64(f)) => number_from_f64(f).ok_or_else(|| mismatch("NaN"))?,
        (Type::Number, Mp::F32(f)) => {
            number_from_f64(f64::from(f)).ok_or_else(|| mismatch("NaN"))?
        }
        // cty writes numbers beyond float64 as decimal strings.
        (Type::Number, Mp::String(s)) => s
            .as_str()
            .and_then(|s| s.parse::<serde_json::Number>().ok())
            .map(Value::Number)
            .ok_or_else(|| mismatch("a string that is no number"))?,
        (Type::String, Mp::String(s)) => match s.into_str() {
            Some(s) => Value::String(s),
            None => return Err(mismatch("a string that is not UTF-8")),
        },
        (Type::List(element), Mp::Array(items)) => Value::List(
            items
                .into_iter()
                .map(|item| from_mp(item, element))
                .collect::<Result<_, _>>()?,
        ),
        (Type::Map(element), Mp::Map(entries)) => {
            let mut map = BTreeMap::new();
            for (k, v) in entries {
                map.insert(key(k)?, from_mp(v, element)?);
            }
            Value::Map(map)
        }
        (Type::Object(attrs), Mp::Map(entries)) => {
            let mut map = BTreeMap::new();
            for (k, v) in entries {
                let k = key(k)?;
                // An attribute this schema does not have is dropped.
                if let Some(t) = attrs.get(&k) {
                    map.insert(k, from_mp(v, t)?);
                }
            }
            for name in attrs.keys() {
                map.entry(name.clone()).or_insert(Value::Null);
            }
            Value::Map(map)
        }
        (_, other) => return Err(mismatch(&format!("{other}"))),
    })
}

fn number_from_f64(f: f64) -> Option<Value> {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        // Integral floats are integers: 5.0 is the port 5.
        return Some(Value::number(f as i64));
    }
    serde_json::Number::from_f64(f).map(Value::Number)
}

fn key(raw: Mp) -> Result<String, DecodeError> {
    match raw {
        Mp::String(s) => s
            .into_str()
            .ok_or_else(|| DecodeError("a map key that is not UTF-8".into())),
        other => Err(DecodeError(format!("a map key that is no string: {other}"))),
    }
}

/// The value as MessagePack for Terraform; objects carry every attribute of their type.
pub fn encode(value: &Value, ty: &Type) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, &to_mp(value, ty));
    out
}

fn to_mp(value: &Value, ty: &Type) -> Mp {
    match (value, ty) {
        (Value::Null, _) => Mp::Nil,
        (Value::Unknown, _) => Mp::Ext(0, vec![0]),
        (Value::Bool(b), _) => Mp::Boolean(*b),
        (Value::Number(n), _) => {
            if let Some(u) = n.as_u64() {
                Mp::from(u)
            } else if let Some(i) = n.as_i64() {
                Mp::from(i)
            } else {
                Mp::F64(n.as_f64().unwrap_or(0.0))
            }
        }
        (Value::String(s), _) => Mp::from(s.as_str()),
        (Value::List(items), Type::List(element)) => {
            Mp::Array(items.iter().map(|i| to_mp(i, element)).collect())
        }
        (Value::Map(entries), Type::Object(attrs)) => Mp::Map(
            attrs
                .iter()
                .map(|(k, t)| {
                    let v = entries.get(k).unwrap_or(&Value::Null);
                    (Mp::from(k.as_str()), to_mp(v, t))
                })
                .collect(),
        ),
        (Value::Map(entries), Type::Map(element)) => Mp::Map(
            entries
                .iter()
                .map(|(k, v)| (Mp::from(k.as_str()), to_mp(v, element)))
                .collect(),
        ),
        // A value that does not fit its type is a bug here; null is safest.
        _ => Mp::Nil,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object() -> Type {
        Type::Object(BTreeMap::from([
            ("name".to_string(), Type::String),
            ("port".to_string(), Type::Number),
            ("factor".to_string(), Type::Number),
            ("on".to_string(), Type::list(Type::String)),
            ("labels".to_string(), Type::map(Type::String)),
            ("mtls".to_string(), Type::Bool),
        ]))
    }

    #[test]
    fn round_trips_every_kind_of_value() {
        let mut value = Value::Null;
        value.set("name", Value::string("web"));
        value.set("port", Value::number(8080));
        value.set(
            "factor",
            Value::Number(serde_json::Number::from_f64(1.4).expect("f64")),
        );
        value.set("on", Value::List(vec![Value::string("5xx")]));
        value.set(
            "labels",
            Value::Map(BTreeMap::from([("team".to_string(), Value::string("a"))])),
        );
        value.set("mtls", Value::Unknown);
        let bytes = encode(&value, &object());
        assert_eq!(decode(&bytes, &object()).expect("decodes"), value);
    }

    #[test]
    fn unknowns_are_extension_zero_and_refined_ones_are_read() {
        assert_eq!(encode(&Value::Unknown, &Type::String), vec![0xd4, 0, 0]);
        // Terraform 1.6+: extension 12 with a refinement payload.
        let refined = [0xc7, 0x01, 0x0c, 0x80];
        assert_eq!(
            decode(&refined, &Type::String).expect("decodes"),
            Value::Unknown
        );
    }

    #[test]
    fn objects_get_every_attribute_and_mismatches_are_errors() {
        let bytes = encode(&Value::Map(BTreeMap::new()), &object());
        let back = decode(&bytes, &object()).expect("decodes");
        assert_eq!(back.get("port"), &Value::Null);
        let string = encode(&Value::string("x"), &Type::String);
        assert!(decode(&string, &Type::Bool).is_err());
        assert!(decode(&[], &Type::Bool).is_err());
    }
}
