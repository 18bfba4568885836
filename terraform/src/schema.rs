//! Schemas declared once and used for everything: what Terraform is told
//! (`GetProviderSchema`), where each attribute lives in a Meridian manifest,
//! its default, whether changing it replaces the object, and the model's own
//! check of a single value.

use crate::proto::tfplugin6 as tf;
use crate::value::{Type, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Required,
    Optional,
    /// Optional, and given a default at plan time when left out.
    OptionalComputed,
    Computed,
}

/// Where an attribute or block lives in the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Nowhere: `id`, `revision` and other values the provider fills.
    None,
    Meta(&'static str),
    Spec(&'static str),
    Status(&'static str),
    /// Inside a nested block: a key of its object.
    Key(&'static str),
}

/// A check of one known value, in the model's terms (the manifest's JSON).
pub type Check = fn(&serde_json::Value) -> Result<(), String>;

#[derive(Debug, Clone)]
pub struct Attr {
    pub name: &'static str,
    pub ty: Type,
    pub mode: Mode,
    pub field: Field,
    pub description: &'static str,
    pub sensitive: bool,
    /// Changing it replaces the object (an identity field).
    pub replace: bool,
    pub default: Option<Value>,
    /// A duration string: `60s` and `1m` are the same value.
    pub duration: bool,
    pub check: Option<Check>,
}

impl Attr {
    fn new(
        name: &'static str,
        ty: Type,
        mode: Mode,
        field: Field,
        description: &'static str,
    ) -> Attr {
        Attr {
            name,
            ty,
            mode,
            field,
            description,
            sensitive: false,
            replace: false,
            default: None,
            duration: false,
            check: None,
        }
    }

    pub fn required(name: &'static str, ty: Type, field: Field, description: &'static str) -> Attr {
        Attr::new(name, ty, Mode::Required, field, description)
    }

    pub fn optional(name: &'static str, ty: Type, field: Field, description: &'static str) -> Attr {
        Attr::new(name, ty, Mode::Optional, field, description)
    }

    pub fn computed(name: &'static str, ty: Type, field: Field, description: &'static str) -> Attr {
        Attr::new(name, ty, Mode::Computed, field, description)
    }

    /// Optional; left out, it is `default`.
    pub fn defaulted(
        name: &'static str,
        ty: Type,
        field: Field,
        default: Value,
        description: &'static str,
    ) -> Attr {
        Attr {
            default: Some(default),
            ..Attr::new(name, ty, Mode::OptionalComputed, field, description)
        }
    }

    pub fn replace(mut self) -> Attr {
        self.replace = true;
        self
    }

    pub fn sensitive(mut self) -> Attr {
        self.sensitive = true;
        self
    }

    pub fn duration(mut self) -> Attr {
        self.duration = true;
        self.check = Some(crate::checks::duration);
        self
    }

    pub fn check(mut self, check: Check) -> Attr {
        self.check = Some(check);
        self
    }

    pub fn is_computed_only(&self) -> bool {
        self.mode == Mode::Computed
    }

    fn to_proto(&self) -> tf::schema::Attribute {
        tf::schema::Attribute {
            name: self.name.to_string(),
            r#type: self.ty.to_json().to_string().into_bytes(),
            nested_type: None,
            description: self.description.to_string(),
            required: self.mode == Mode::Required,
            optional: matches!(self.mode, Mode::Optional | Mode::OptionalComputed),
            computed: matches!(self.mode, Mode::OptionalComputed | Mode::Computed),
            sensitive: self.sensitive,
            description_kind: tf::StringKind::Markdown as i32,
            deprecated: false,
        }
    }
}

/// A nested block, written `name { ... }` in configuration; a list in values.
#[derive(Debug, Clone)]
pub struct Nested {
    pub name: &'static str,
    pub field: Field,
    pub block: Block,
    /// 1: at most one, an object in the manifest; 0: any number, an array.
    pub max_items: u32,
}

impl Nested {
    pub fn single(name: &'static str, field: Field, block: Block) -> Nested {
        Nested {
            name,
            field,
            block,
            max_items: 1,
        }
    }

    pub fn list(name: &'static str, field: Field, block: Block) -> Nested {
        Nested {
            name,
            field,
            block,
            max_items: 0,
        }
    }

    pub fn ty(&self) -> Type {
        Type::list(self.block.ty())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Block {
    pub description: &'static str,
    pub attrs: Vec<Attr>,
    pub blocks: Vec<Nested>,
}

impl Block {
    pub fn new(description: &'static str, attrs: Vec<Attr>, blocks: Vec<Nested>) -> Block {
        Block {
            description,
            attrs,
            blocks,
        }
    }

    /// The object type of this block's values.
    pub fn ty(&self) -> Type {
        let mut attrs: BTreeMap<String, Type> = self
            .attrs
            .iter()
            .map(|a| (a.name.to_string(), a.ty.clone()))
            .collect();
        for nested in &self.blocks {
            attrs.insert(nested.name.to_string(), nested.ty());
        }
        Type::Object(attrs)
    }

    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    pub fn to_proto(&self) -> tf::schema::Block {
        tf::schema::Block {
            version: 0,
            attributes: self.attrs.iter().map(Attr::to_proto).collect(),
            block_types: self
                .blocks
                .iter()
                .map(|n| tf::schema::NestedBlock {
                    type_name: n.name.to_string(),
                    block: Some(n.block.to_proto()),
                    nesting: tf::schema::nested_block::NestingMode::List as i32,
                    min_items: 0,
                    max_items: i64::from(n.max_items),
                })
                .collect(),
            description: self.description.to_string(),
            description_kind: tf::StringKind::Markdown as i32,
            deprecated: false,
        }
    }

    /// The schema of a data source that reads what this resource writes:
    /// everything computed but `inputs`, and each nested block a computed
    /// attribute of list-of-object type (the same values, so the same
    /// conversion from a manifest serves both).
    pub fn data_source(&self, inputs: &[&str]) -> Block {
        let mut attrs: Vec<Attr> = self
            .attrs
            .iter()
            .map(|a| {
                let input = inputs.contains(&a.name);
                Attr {
                    mode: if input { a.mode } else { Mode::Computed },
                    check: if input { a.check } else { None },
                    replace: false,
                    ..a.clone()
                }
            })
            .collect();
        for nested in &self.blocks {
            attrs.push(Attr::computed(
                nested.name,
                nested.ty(),
                nested.field,
                "As in the resource's block of this name.",
            ));
        }
        Block::new(self.description, attrs, Vec::new())
    }
}

pub fn schema(block: &Block) -> tf::Schema {
    tf::Schema {
        version: 0,
        block: Some(block.to_proto()),
    }
}
