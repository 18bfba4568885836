//! The provider's resources, by Terraform type name.

pub mod kinds;
pub mod object;
pub mod token;

use crate::admin::Admin;
use crate::diag::{Diag, Path};
use crate::schema::Block;
use crate::value::Value;
use meridian_model::Kind;
use object::{ObjectResource, Outcome};

pub enum Resource {
    Object(ObjectResource),
    Token(Block),
}

/// Every resource the provider serves.
pub fn all() -> Vec<(&'static str, Resource)> {
    let object = |type_name, kind, block| {
        (
            type_name,
            Resource::Object(ObjectResource {
                type_name,
                kind,
                block,
            }),
        )
    };
    vec![
        object("meridian_cluster", Kind::Cluster, kinds::cluster()),
        object("meridian_service", Kind::Service, kinds::service()),
        object("meridian_endpoints", Kind::Endpoints, kinds::endpoints()),
        object(
            "meridian_traffic_split",
            Kind::TrafficSplit,
            kinds::traffic_split(),
        ),
        object(
            "meridian_failover_policy",
            Kind::FailoverPolicy,
            kinds::failover_policy(),
        ),
        ("meridian_bootstrap_token", Resource::Token(token::schema())),
    ]
}

impl Resource {
    pub fn block(&self) -> &Block {
        match self {
            Resource::Object(o) => &o.block,
            Resource::Token(block) => block,
        }
    }

    pub fn validate(&self, config: &Value) -> Vec<Diag> {
        match self {
            Resource::Object(o) => o.validate(config),
            Resource::Token(block) => token::validate(block, config),
        }
    }

    pub fn plan(&self, prior: &Value, config: &Value) -> (Value, Vec<Path>, Vec<Diag>) {
        match self {
            Resource::Object(o) => o.plan(prior, config),
            Resource::Token(block) => token::plan(block, prior, config),
        }
    }

    pub async fn apply(&self, admin: &Admin, prior: &Value, planned: &Value) -> Outcome {
        match self {
            Resource::Object(o) => o.apply(admin, prior, planned).await,
            Resource::Token(_) => token::apply(admin, prior, planned).await,
        }
    }

    pub async fn read(&self, admin: &Admin, current: &Value) -> Outcome {
        match self {
            Resource::Object(o) => o.read(admin, current).await,
            Resource::Token(_) => token::read(admin, current).await,
        }
    }

    pub async fn import(&self, admin: &Admin, id: &str) -> Outcome {
        match self {
            Resource::Object(o) => o.import(admin, id).await,
            Resource::Token(_) => (
                Value::Null,
                vec![Diag::error(
                    "Bootstrap tokens cannot be imported",
                    "the control plane shows a token's secret only once, when it is created; create a new token instead",
                )],
            ),
        }
    }
}
