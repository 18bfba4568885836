//! When two values mean the same thing: `60s` is `1m`, a left-out field is
//! its default, no labels is an empty map. Plans and refreshes keep what the
//! user wrote whenever the control plane holds the same meaning, so that a
//! value written one way and stored another never shows as a change.

use crate::diag::{Diag, Path, Step};
use crate::schema::{Attr, Block};
use crate::value::{Type, Value};

/// The configuration with every left-out defaulted attribute set.
pub fn with_defaults(block: &Block, config: &Value) -> Value {
    if config.is_null() || config.is_unknown() {
        return config.clone();
    }
    let mut value = config.clone();
    for attr in &block.attrs {
        if let (Some(default), true) = (&attr.default, config.get(attr.name).is_null()) {
            value.set(attr.name, default.clone());
        }
    }
    for nested in &block.blocks {
        let items = config.get(nested.name);
        if let Value::List(items) = items {
            let items = items
                .iter()
                .map(|item| with_defaults(&nested.block, item))
                .collect();
            value.set(nested.name, Value::List(items));
        }
    }
    value
}

/// The value as compared: a default for null, and no map (labels, which the
/// control plane leaves out when empty) for null. A null list is not an
/// empty one: no `allowed_clusters` admits every cluster, `[]` none.
fn normal<'a>(attr: &'a Attr, value: &'a Value) -> std::borrow::Cow<'a, Value> {
    use std::borrow::Cow;
    match (value, &attr.default, &attr.ty) {
        (Value::Null, Some(default), _) => Cow::Borrowed(default),
        (Value::Null, None, Type::Map(_)) => Cow::Owned(Value::Map(Default::default())),
        _ => Cow::Borrowed(value),
    }
}

/// Whether `a` and `b` mean the same for this attribute.
pub fn same(attr: &Attr, a: &Value, b: &Value) -> bool {
    let (a, b) = (normal(attr, a), normal(attr, b));
    match (a.as_ref(), b.as_ref()) {
        (Value::Unknown, _) | (_, Value::Unknown) => false,
        (Value::String(x), Value::String(y)) if attr.duration => {
            match (
                meridian_model::Duration::parse(x),
                meridian_model::Duration::parse(y),
            ) {
                (Ok(x), Ok(y)) => x == y,
                _ => x == y,
            }
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (x, y) => x == y,
    }
}

/// The planned value: `planned` (the configuration with defaults), but the
/// prior value wherever that means the same, as Terraform allows a provider
/// to plan for a value that is set on both sides.
pub fn plan_merge(block: &Block, prior: &Value, planned: &Value) -> Value {
    if prior.is_null() || planned.is_null() || planned.is_unknown() {
        return planned.clone();
    }
    let mut value = planned.clone();
    for attr in block.attrs.iter().filter(|a| !a.is_computed_only()) {
        let (p, n) = (prior.get(attr.name), planned.get(attr.name));
        if !p.is_null() && !n.is_null() && same(attr, p, n) {
            value.set(attr.name, p.clone());
        }
    }
    for nested in &block.blocks {
        let (p, n) = (prior.get(nested.name), planned.get(nested.name));
        if let (Value::List(p), Value::List(n)) = (p, n) {
            if p.len() == n.len() {
                let items = p
                    .iter()
                    .zip(n)
                    .map(|(p, n)| plan_merge(&nested.block, p, n))
                    .collect();
                value.set(nested.name, Value::List(items));
            }
        }
    }
    value
}

/// The refreshed value: what the control plane holds, but the prior value
/// wherever that means the same.
pub fn read_merge(block: &Block, prior: &Value, fresh: &Value) -> Value {
    if prior.is_null() || fresh.is_null() {
        return fresh.clone();
    }
    let mut value = fresh.clone();
    for attr in block.attrs.iter().filter(|a| !a.is_computed_only()) {
        let (p, f) = (prior.get(attr.name), fresh.get(attr.name));
        if same(attr, p, f) {
            value.set(attr.name, p.clone());
        }
    }
    for nested in &block.blocks {
        if let (Value::List(p), Value::List(f)) = (prior.get(nested.name), fresh.get(nested.name)) {
            if p.len() == f.len() {
                let items = p
                    .iter()
                    .zip(f)
                    .map(|(p, f)| read_merge(&nested.block, p, f))
                    .collect();
                value.set(nested.name, Value::List(items));
            }
        }
    }
    value
}

/// Whether anything the user configures differs between `a` and `b`.
pub fn differs(block: &Block, a: &Value, b: &Value) -> bool {
    let attr_differs = block
        .attrs
        .iter()
        .filter(|attr| !attr.is_computed_only())
        .any(|attr| !same(attr, a.get(attr.name), b.get(attr.name)));
    attr_differs
        || block.blocks.iter().any(|nested| {
            let (x, y) = (a.get(nested.name).as_list(), b.get(nested.name).as_list());
            x.len() != y.len() || x.iter().zip(y).any(|(x, y)| differs(&nested.block, x, y))
        })
}

/// The identity attributes whose change replaces the object.
pub fn replaced(block: &Block, prior: &Value, planned: &Value) -> Vec<Path> {
    block
        .attrs
        .iter()
        .filter(|a| a.replace && !same(a, prior.get(a.name), planned.get(a.name)))
        .map(|a| Path::attr(a.name))
        .collect()
}

/// Checks of each known value on its own, and of how many blocks are given.
pub fn check_values(block: &Block, value: &Value, path: &Path) -> Vec<Diag> {
    let mut diags = Vec::new();
    for attr in &block.attrs {
        let (Some(check), v) = (attr.check, value.get(attr.name)) else {
            continue;
        };
        let at = path.then(Step::Attr(attr.name.to_string()));
        let items: Vec<(Path, &Value)> = match (&attr.ty, v) {
            (Type::List(_), Value::List(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| (at.then(Step::Index(i as i64)), item))
                .collect(),
            _ => vec![(at.clone(), v)],
        };
        for (at, item) in items {
            let Some(json) = item.to_json().filter(|j| !j.is_null()) else {
                continue;
            };
            if let Err(reason) = check(&json) {
                diags.push(Diag::error(format!("Invalid {at}"), reason).at(at));
            }
        }
    }
    for nested in &block.blocks {
        let at = path.then(Step::Attr(nested.name.to_string()));
        let items = value.get(nested.name).as_list();
        if nested.max_items > 0 && items.len() > nested.max_items as usize {
            diags.push(
                Diag::error(
                    format!("Too many {} blocks", nested.name),
                    format!("at most {} may be given", nested.max_items),
                )
                .at(at.clone()),
            );
        }
        for (i, item) in items.iter().enumerate() {
            diags.extend(check_values(
                &nested.block,
                item,
                &at.then(Step::Index(i as i64)),
            ));
        }
    }
    diags
}
