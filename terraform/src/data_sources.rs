//! Data sources: a service or a cluster as its resource shows it, the
//! control plane's members, and the proxies connected to it.

use crate::admin::Admin;
use crate::diag::{self, Diag};
use crate::resources::kinds;
use crate::resources::object::{ObjectResource, Outcome};
use crate::schema::{Attr, Block, Field};
use crate::value::{Type, Value};
use meridian_model::Kind;
use meridian_proto::v1 as pb;
use std::collections::BTreeMap;

pub enum DataSource {
    /// One object, read with its resource's conversion.
    Object(ObjectResource, Block),
    Members(Block),
    Proxies(Block),
}

fn object(fields: &[(&str, Type)]) -> Type {
    Type::Object(
        fields
            .iter()
            .map(|(name, ty)| (name.to_string(), ty.clone()))
            .collect(),
    )
}

fn members_schema() -> Block {
    let member = object(&[
        ("node_id", Type::Number),
        ("addr", Type::String),
        ("role", Type::String),
        ("leader", Type::Bool),
    ]);
    Block::new(
        "The control plane's Raft members.",
        vec![
            Attr::computed("id", Type::String, Field::None, "Always `members`."),
            Attr::computed(
                "leader",
                Type::Number,
                Field::None,
                "The leader's node id (0 while there is none).",
            ),
            Attr::computed(
                "members",
                Type::list(member),
                Field::None,
                "Each member: `node_id`, `addr`, `role` (`voter` or `learner`), `leader`.",
            ),
        ],
        vec![],
    )
}

fn proxies_schema() -> Block {
    let proxy = object(&[
        ("node_id", Type::String),
        ("cluster", Type::String),
        ("region", Type::String),
        ("zone", Type::String),
        ("control_plane_node", Type::Number),
        ("protocol", Type::String),
        ("identity", Type::String),
        ("connected_unix_seconds", Type::Number),
    ]);
    Block::new(
        "The proxies (and proxyless clients) connected to the control plane over ADS.",
        vec![
            Attr::optional("cluster", Type::String, Field::None, "Only the proxies of this cluster."),
            Attr::computed("id", Type::String, Field::None, "The cluster filter, or `all`."),
            Attr::computed("proxies", Type::list(proxy), Field::None, "Each proxy: `node_id`, `cluster`, `region`, `zone`, `control_plane_node`, `protocol` (`sotw` or `delta`), `identity` (its SPIFFE ID), `connected_unix_seconds`."),
            Attr::computed("unreachable_nodes", Type::list(Type::Number), Field::None, "Member nodes that did not answer."),
        ],
        vec![],
    )
}

pub fn all() -> Vec<(&'static str, DataSource)> {
    let service = kinds::service();
    let cluster = kinds::cluster();
    vec![
        (
            "meridian_service",
            DataSource::Object(
                ObjectResource {
                    type_name: "meridian_service",
                    kind: Kind::Service,
                    block: service.clone(),
                },
                service.data_source(&["namespace", "name"]),
            ),
        ),
        (
            "meridian_cluster",
            DataSource::Object(
                ObjectResource {
                    type_name: "meridian_cluster",
                    kind: Kind::Cluster,
                    block: cluster.clone(),
                },
                cluster.data_source(&["name"]),
            ),
        ),
        ("meridian_members", DataSource::Members(members_schema())),
        ("meridian_proxies", DataSource::Proxies(proxies_schema())),
    ]
}

impl DataSource {
    pub fn block(&self) -> &Block {
        match self {
            DataSource::Object(_, block)
            | DataSource::Members(block)
            | DataSource::Proxies(block) => block,
        }
    }

    pub fn validate(&self, config: &Value) -> Vec<Diag> {
        crate::semantic::check_values(self.block(), config, &Default::default())
    }

    pub async fn read(&self, admin: &Admin, config: &Value) -> Outcome {
        match self {
            DataSource::Object(resource, _) => resource.lookup(admin, config).await,
            DataSource::Members(_) => members(admin).await,
            DataSource::Proxies(_) => proxies(admin, config).await,
        }
    }
}

async fn members(admin: &Admin) -> Outcome {
    let reply = admin
        .call(|mut c| async move { c.list_members(pb::ListMembersRequest {}).await })
        .await;
    let members = match reply {
        Ok(reply) => reply.members,
        Err(status) => {
            return (
                Value::Null,
                vec![diag::from_status("Cannot list the members", &status)],
            )
        }
    };
    let leader = members.iter().find(|m| m.leader).map_or(0, |m| m.node_id);
    let members = members
        .into_iter()
        .map(|m| {
            Value::Map(BTreeMap::from([
                ("node_id".to_string(), Value::number(m.node_id)),
                ("addr".to_string(), Value::String(m.addr)),
                ("role".to_string(), Value::String(m.role)),
                ("leader".to_string(), Value::Bool(m.leader)),
            ]))
        })
        .collect();
    let mut state = Value::Null;
    state.set("id", Value::string("members"));
    state.set("leader", Value::number(leader));
    state.set("members", Value::List(members));
    (state, Vec::new())
}

async fn proxies(admin: &Admin, config: &Value) -> Outcome {
    let reply = admin
        .call(|mut c| async move {
            c.list_proxies(pb::ListProxiesRequest { local_only: false })
                .await
        })
        .await;
    let reply = match reply {
        Ok(reply) => reply,
        Err(status) => {
            return (
                Value::Null,
                vec![diag::from_status("Cannot list the proxies", &status)],
            )
        }
    };
    let only = config.get("cluster").as_str();
    let proxies = reply
        .proxies
        .into_iter()
        .filter(|p| only.is_none_or(|c| p.cluster == c))
        .map(|p| {
            Value::Map(BTreeMap::from([
                ("node_id".to_string(), Value::String(p.node_id)),
                ("cluster".to_string(), Value::String(p.cluster)),
                ("region".to_string(), Value::String(p.region)),
                ("zone".to_string(), Value::String(p.zone)),
                (
                    "control_plane_node".to_string(),
                    Value::number(p.control_plane_node),
                ),
                ("protocol".to_string(), Value::String(p.protocol)),
                ("identity".to_string(), Value::String(p.identity)),
                (
                    "connected_unix_seconds".to_string(),
                    Value::number(p.connected_unix_seconds),
                ),
            ]))
        })
        .collect();
    let mut state = Value::Null;
    state.set("cluster", config.get("cluster").clone());
    state.set("id", Value::string(only.unwrap_or("all")));
    state.set("proxies", Value::List(proxies));
    state.set(
        "unreachable_nodes",
        Value::List(
            reply
                .unreachable_nodes
                .into_iter()
                .map(Value::number)
                .collect(),
        ),
    );
    (state, Vec::new())
}
