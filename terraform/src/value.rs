//! Terraform's values and types as the provider sees them: the subset of
//! cty that Meridian's schemas use (strings, numbers, bools, lists, maps,
//! objects), with unknown values, and the JSON form of types Terraform
//! reads from a schema.

use std::collections::BTreeMap;

/// A cty type. Sets and tuples are not used by Meridian's schemas.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    String,
    Number,
    Bool,
    List(Box<Type>),
    Map(Box<Type>),
    Object(BTreeMap<String, Type>),
}

impl Type {
    pub fn list(element: Type) -> Type {
        Type::List(Box::new(element))
    }

    pub fn map(element: Type) -> Type {
        Type::Map(Box::new(element))
    }

    /// The type as cty's JSON: `"string"`, `["list","string"]`, `["object",{...}]`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Type::String => json!("string"),
            Type::Number => json!("number"),
            Type::Bool => json!("bool"),
            Type::List(e) => json!(["list", e.to_json()]),
            Type::Map(e) => json!(["map", e.to_json()]),
            Type::Object(attrs) => {
                let attrs: serde_json::Map<String, serde_json::Value> = attrs
                    .iter()
                    .map(|(k, t)| (k.clone(), t.to_json()))
                    .collect();
                json!(["object", attrs])
            }
        }
    }
}

/// A value of some [`Type`]; objects and maps are both `Map`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    /// Not known until apply (msgpack extension 0, or a refined unknown).
    Unknown,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

static NULL: Value = Value::Null;

impl Value {
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    pub fn number(n: impl Into<serde_json::Number>) -> Value {
        Value::Number(n.into())
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Value::Unknown)
    }

    /// Whether this value or anything inside it is unknown.
    pub fn has_unknown(&self) -> bool {
        match self {
            Value::Unknown => true,
            Value::List(items) => items.iter().any(Value::has_unknown),
            Value::Map(entries) => entries.values().any(Value::has_unknown),
            _ => false,
        }
    }

    /// An object's attribute (null when absent or when this is no object).
    pub fn get(&self, name: &str) -> &Value {
        match self {
            Value::Map(entries) => entries.get(name).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    pub fn as_list(&self) -> &[Value] {
        match self {
            Value::List(items) => items,
            _ => &[],
        }
    }

    /// Sets an attribute of an object (a null value becomes an empty object first).
    pub fn set(&mut self, name: &str, value: Value) {
        if !matches!(self, Value::Map(_)) {
            *self = Value::Map(BTreeMap::new());
        }
        if let Value::Map(entries) = self {
            entries.insert(name.to_string(), value);
        }
    }

    /// The value as plain JSON, for a manifest; `None` if anything is unknown.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        Some(match self {
            Value::Null => serde_json::Value::Null,
            Value::Unknown => return None,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::Value::Number(n.clone()),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::List(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect::<Option<_>>()?)
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| Some((k.clone(), v.to_json()?)))
                    .collect::<Option<_>>()?,
            ),
        })
    }

    /// Reads JSON as a value of type `ty`; what does not fit the type is null.
    pub fn from_json(ty: &Type, json: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match (ty, json) {
            (_, J::Null) => Value::Null,
            (Type::String, J::String(s)) => Value::String(s.clone()),
            (Type::String, J::Number(n)) => Value::String(n.to_string()),
            (Type::String, J::Bool(b)) => Value::String(b.to_string()),
            (Type::Number, J::Number(n)) => Value::Number(n.clone()),
            (Type::Number, J::String(s)) => s
                .parse::<serde_json::Number>()
                .map(Value::Number)
                .unwrap_or(Value::Null),
            (Type::Bool, J::Bool(b)) => Value::Bool(*b),
            (Type::List(e), J::Array(items)) => {
                Value::List(items.iter().map(|i| Value::from_json(e, i)).collect())
            }
            (Type::Map(e), J::Object(entries)) => Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(e, v)))
                    .collect(),
            ),
            (Type::Object(attrs), J::Object(entries)) => Value::Map(
                attrs
                    .iter()
                    .map(|(k, t)| {
                        let v = entries.get(k).unwrap_or(&J::Null);
                        (k.clone(), Value::from_json(t, v))
                    })
                    .collect(),
            ),
            _ => Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_cty_json() {
        let ty = Type::list(Type::Object(BTreeMap::from([
            ("port".to_string(), Type::Number),
            ("tags".to_string(), Type::map(Type::String)),
        ])));
        assert_eq!(
            ty.to_json().to_string(),
            r#"["list",["object",{"port":"number","tags":["map","string"]}]]"#
        );
    }

    #[test]
    fn json_round_trips_and_unknown_has_no_json() {
        let ty = Type::Object(BTreeMap::from([
            ("name".to_string(), Type::String),
            ("ports".to_string(), Type::list(Type::Number)),
        ]));
        let json = serde_json::json!({"name": "web", "ports": [80, 443]});
        let value = Value::from_json(&ty, &json);
        assert_eq!(value.to_json(), Some(json));
        let mut partial = value.clone();
        partial.set("name", Value::Unknown);
        assert!(partial.has_unknown());
        assert_eq!(partial.to_json(), None);
    }
}
