//! A resource's Terraform value and its Meridian manifest, each made from
//! the other through the schema; and a field the model names in an error
//! (`spec.endpoints[1].weight`) found again as a Terraform attribute path
//! (`endpoint[1].weight`).

use crate::diag::{Diag, Path, Step};
use crate::schema::{Block, Field, Nested};
use crate::value::Value;
use serde_json::{json, Map, Value as Json};

/// The manifest the value describes; `None` while any part is unknown.
pub fn to_manifest(kind: &str, block: &Block, value: &Value) -> Option<Json> {
    let mut metadata = Map::new();
    let mut spec = Map::new();
    for attr in &block.attrs {
        let target = match attr.field {
            Field::Meta(key) => (&mut metadata, key),
            Field::Spec(key) => (&mut spec, key),
            _ => continue,
        };
        let v = value.get(attr.name);
        if !v.is_null() {
            target.0.insert(target.1.to_string(), v.to_json()?);
        }
    }
    for nested in &block.blocks {
        if let Field::Spec(key) = nested.field {
            if let Some(json) = nested_json(nested, value.get(nested.name))? {
                spec.insert(key.to_string(), json);
            }
        }
    }
    Some(json!({"kind": kind, "metadata": metadata, "spec": spec}))
}

/// A block's JSON: `Some(None)` when absent, `None` while unknown.
fn nested_json(nested: &Nested, value: &Value) -> Option<Option<Json>> {
    if value.is_unknown() {
        return None;
    }
    let items = value.as_list();
    if nested.max_items == 1 {
        return match items.first() {
            None => Some(None),
            Some(item) => Some(Some(object_json(&nested.block, item)?)),
        };
    }
    let items = items
        .iter()
        .map(|item| object_json(&nested.block, item))
        .collect::<Option<Vec<_>>>()?;
    Some(Some(Json::Array(items)))
}

fn object_json(block: &Block, value: &Value) -> Option<Json> {
    if value.is_unknown() {
        return None;
    }
    let mut object = Map::new();
    for attr in &block.attrs {
        if let Field::Key(key) = attr.field {
            let v = value.get(attr.name);
            if !v.is_null() {
                object.insert(key.to_string(), v.to_json()?);
            }
        }
    }
    for nested in &block.blocks {
        if let Field::Key(key) = nested.field {
            if let Some(json) = nested_json(nested, value.get(nested.name))? {
                object.insert(key.to_string(), json);
            }
        }
    }
    Some(Json::Object(object))
}

/// The value a manifest describes; attributes outside it (`id`, `revision`) are null.
pub fn from_manifest(block: &Block, manifest: &Json) -> Value {
    let mut value = Value::Map(Default::default());
    for attr in &block.attrs {
        let json = match attr.field {
            Field::Meta(key) => &manifest["metadata"][key],
            Field::Spec(key) => &manifest["spec"][key],
            Field::Status(key) => &manifest["status"][key],
            Field::Key(_) | Field::None => &Json::Null,
        };
        value.set(attr.name, Value::from_json(&attr.ty, json));
    }
    for nested in &block.blocks {
        if let Field::Spec(key) = nested.field {
            value.set(nested.name, nested_value(nested, &manifest["spec"][key]));
        }
    }
    value
}

fn nested_value(nested: &Nested, json: &Json) -> Value {
    match json {
        Json::Array(items) if nested.max_items != 1 => Value::List(
            items
                .iter()
                .map(|item| object_value(&nested.block, item))
                .collect(),
        ),
        Json::Object(_) if nested.max_items == 1 => {
            Value::List(vec![object_value(&nested.block, json)])
        }
        _ => Value::List(Vec::new()),
    }
}

fn object_value(block: &Block, json: &Json) -> Value {
    let mut value = Value::Map(Default::default());
    for attr in &block.attrs {
        let v = match attr.field {
            Field::Key(key) => Value::from_json(&attr.ty, &json[key]),
            _ => Value::Null,
        };
        value.set(attr.name, v);
    }
    for nested in &block.blocks {
        if let Field::Key(key) = nested.field {
            value.set(nested.name, nested_value(nested, &json[key]));
        }
    }
    value
}

/// One segment of a model field: `endpoints[1]` is ("endpoints", Some(Some(1))),
/// `endpoints[]` is ("endpoints", Some(None)).
fn segment(text: &str) -> (&str, Option<Option<i64>>) {
    match text.split_once('[') {
        Some((name, rest)) => (name, Some(rest.trim_end_matches(']').parse().ok())),
        None => (text, None),
    }
}

/// The attribute path of a field the model names, as far as the schema has it.
pub fn path_of(block: &Block, field: &str) -> Option<Path> {
    let mut segments = field.split('.');
    let place = segments.next()?;
    let (key, index) = segment(segments.next()?);
    let matches = |f: Field| match (place, f) {
        ("metadata", Field::Meta(k)) | ("spec", Field::Spec(k)) => k == key,
        _ => false,
    };
    if let Some(attr) = block.attrs.iter().find(|a| matches(a.field)) {
        let path = Path::attr(attr.name);
        return Some(match index {
            Some(Some(i)) => path.then(Step::Index(i)),
            _ => path,
        });
    }
    let nested = block.blocks.iter().find(|n| matches(n.field))?;
    Some(descend(nested, index, Path::attr(nested.name), segments))
}

fn descend<'a>(
    nested: &Nested,
    index: Option<Option<i64>>,
    path: Path,
    mut rest: impl Iterator<Item = &'a str>,
) -> Path {
    let path = match (nested.max_items, index) {
        (1, _) => path.then(Step::Index(0)),
        (_, Some(Some(i))) => path.then(Step::Index(i)),
        _ => return path,
    };
    let Some(next) = rest.next() else {
        return path;
    };
    let (key, index) = segment(next);
    if let Some(attr) = nested
        .block
        .attrs
        .iter()
        .find(|a| matches!(a.field, Field::Key(k) if k == key))
    {
        let path = path.then(Step::Attr(attr.name.to_string()));
        return match index {
            Some(Some(i)) => path.then(Step::Index(i)),
            _ => path,
        };
    }
    match nested
        .block
        .blocks
        .iter()
        .find(|n| matches!(n.field, Field::Key(k) if k == key))
    {
        Some(inner) => descend(
            inner,
            index,
            path.then(Step::Attr(inner.name.to_string())),
            rest,
        ),
        None => path,
    }
}

/// The model's verdict on a whole value, as the control plane would give
/// it; nothing while any part is unknown (the control plane checks it at apply).
pub fn check_with_model(kind: &str, block: &Block, value: &Value) -> Vec<Diag> {
    let Some(manifest) = to_manifest(kind, block, value) else {
        return Vec::new();
    };
    let manifest: meridian_model::Manifest = match serde_json::from_value(manifest) {
        Ok(m) => m,
        Err(e) => return vec![Diag::error("Invalid configuration", e.to_string())],
    };
    match meridian_model::Resource::from_manifest(manifest) {
        Ok(_) => Vec::new(),
        Err(e) => vec![model_error(block, &e)],
    }
}

/// A model error as a diagnostic on the attribute it names.
pub fn model_error(block: &Block, error: &meridian_model::ModelError) -> Diag {
    match error {
        meridian_model::ModelError::Invalid { field, message } => match path_of(block, field) {
            Some(path) => Diag::error(
                format!("Invalid {path}"),
                format!("{message} (the control plane's check of {field})"),
            )
            .at(path),
            None => Diag::error(format!("Invalid {field}"), message.clone()),
        },
        other => Diag::error("Invalid configuration", other.to_string()),
    }
}

/// The attribute a control-plane message starts with (`spec.order[1]: unknown
/// cluster 'mars'`), if the schema has it.
pub fn path_in_message(block: &Block, message: &str) -> Option<Path> {
    message
        .split(": ")
        .filter(|part| part.starts_with("spec.") || part.starts_with("metadata."))
        .find_map(|part| path_of(block, part.trim()))
}
