//! `meridian_bootstrap_token`: a token made by the control plane
//! (`CreateToken`, which generates the secret), its secret kept as a
//! sensitive computed attribute, revoked on destroy. Every argument fixes the
//! token, so any change makes a new one.

use super::object::Outcome;
use crate::admin::Admin;
use crate::checks::{label, parse};
use crate::diag::{self, Diag, Path};
use crate::manifest::model_error;
use crate::schema::{Attr, Block, Field};
use crate::semantic::{check_values, differs, plan_merge, replaced, with_defaults};
use crate::value::{Type, Value};
use meridian_model::spec::{BootstrapTokenSpec, TokenRole};
use meridian_proto::v1 as pb;

pub fn schema() -> Block {
    let s = Type::String;
    let n = Type::Number;
    Block::new(
        "A bootstrap token that proxies, agents or operators trade for a certificate.",
        vec![
            Attr::required(
                "role",
                s.clone(),
                Field::Spec("role"),
                "`proxy`, `agent`, `admin` or `viewer`.",
            )
            .replace()
            .check(parse::<TokenRole>),
            Attr::optional(
                "cluster",
                s.clone(),
                Field::Spec("cluster"),
                "The cluster of a proxy or agent token (it must exist).",
            )
            .replace()
            .check(label),
            Attr::optional(
                "name",
                s.clone(),
                Field::Spec("name"),
                "The only name the token may put in a certificate.",
            )
            .replace()
            .check(label),
            Attr::defaulted(
                "ttl",
                s.clone(),
                Field::None,
                Value::string("1h"),
                "How long the token is valid, a duration; `1h` when left out.",
            )
            .replace()
            .duration(),
            Attr::defaulted(
                "max_uses",
                n.clone(),
                Field::Spec("maxUses"),
                Value::number(1),
                "How many certificates it may obtain; 1 when left out.",
            )
            .replace()
            .check(parse::<u32>),
            Attr::computed("id", s.clone(), Field::None, "The token's id (`mrd-...`)."),
            Attr::computed(
                "token",
                s,
                Field::None,
                "The whole token, to give to `--token`; shown once by the control plane.",
            )
            .sensitive(),
            Attr::computed(
                "expires_at",
                n.clone(),
                Field::Spec("expiresAt"),
                "Unix seconds after which it is refused.",
            ),
            Attr::computed(
                "used",
                n,
                Field::Spec("used"),
                "How many certificates it has obtained.",
            ),
        ],
        vec![],
    )
}

fn ttl_seconds(value: &Value) -> Option<u64> {
    let ttl = meridian_model::Duration::parse(value.get("ttl").as_str()?).ok()?;
    Some(ttl.as_std().as_secs())
}

pub fn validate(block: &Block, config: &Value) -> Vec<Diag> {
    let mut diags = check_values(block, config, &Path::default());
    if !diags.is_empty() || config.has_unknown() {
        return diags;
    }
    let config = with_defaults(block, config);
    if ttl_seconds(&config) == Some(0) {
        diags.push(
            Diag::error("Invalid ttl", "ttl must be at least one second").at(Path::attr("ttl")),
        );
    }
    // The model's check of a token, with a placeholder for the secret's hash.
    let spec = serde_json::json!({
        "role": config.get("role").to_json(),
        "cluster": config.get("cluster").to_json(),
        "name": config.get("name").to_json(),
        "maxUses": config.get("max_uses").to_json(),
        "expiresAt": 0,
        "secretSha256": "0".repeat(64),
    });
    let checked = serde_json::from_value::<BootstrapTokenSpec>(spec)
        .map_err(|e| meridian_model::ModelError::invalid("spec", e.to_string()))
        .and_then(|spec| spec.validate());
    if let Err(e) = checked {
        diags.push(model_error(block, &e));
    }
    diags
}

pub fn plan(block: &Block, prior: &Value, config: &Value) -> (Value, Vec<Path>, Vec<Diag>) {
    if config.is_null() {
        return (Value::Null, Vec::new(), Vec::new());
    }
    let diags = validate(block, config);
    if diag::has_errors(&diags) {
        return (Value::Null, Vec::new(), diags);
    }
    let mut planned = plan_merge(block, prior, &with_defaults(block, config));
    let replace = if prior.is_null() {
        Vec::new()
    } else {
        replaced(block, prior, &planned)
    };
    let unchanged = !prior.is_null() && replace.is_empty() && !differs(block, prior, &planned);
    for attr in block.attrs.iter().filter(|a| a.is_computed_only()) {
        let value = if unchanged {
            prior.get(attr.name).clone()
        } else {
            Value::Unknown
        };
        planned.set(attr.name, value);
    }
    (planned, replace, diags)
}

pub async fn apply(admin: &Admin, prior: &Value, planned: &Value) -> Outcome {
    if planned.is_null() {
        let Some(id) = prior.get("id").as_str().map(str::to_string) else {
            return (Value::Null, Vec::new());
        };
        let request = pb::RevokeTokenRequest { id: id.clone() };
        let revoked = admin
            .call(|mut c| {
                let request = request.clone();
                async move { c.revoke_token(request).await }
            })
            .await;
        return match revoked {
            Ok(_) => (Value::Null, Vec::new()),
            Err(status) if status.code() == tonic::Code::NotFound => (Value::Null, Vec::new()),
            Err(status) => (
                prior.clone(),
                vec![diag::from_status(
                    &format!("Cannot revoke token {id}"),
                    &status,
                )],
            ),
        };
    }
    let text = |name: &str| planned.get(name).as_str().unwrap_or_default().to_string();
    let request = pb::CreateTokenRequest {
        role: text("role"),
        cluster: text("cluster"),
        ttl_seconds: ttl_seconds(planned).unwrap_or(3600),
        max_uses: planned
            .get("max_uses")
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1),
        name: text("name"),
    };
    let created = admin
        .call(|mut c| {
            let request = request.clone();
            async move { c.create_token(request).await }
        })
        .await;
    match created {
        Ok(reply) => {
            let mut state = planned.clone();
            state.set("id", Value::string(reply.id));
            state.set("token", Value::string(reply.token));
            state.set("expires_at", Value::number(reply.expires_at_unix_seconds));
            state.set("used", Value::number(0));
            (state, Vec::new())
        }
        Err(status) => {
            let mut d = diag::from_status("Cannot create a bootstrap token", &status);
            if status.message().contains("cluster") {
                d = d.at(Path::attr("cluster"));
            }
            (Value::Null, vec![d])
        }
    }
}

/// A token that is gone or revoked is dropped from the state, so the next
/// apply makes a new one.
pub async fn read(admin: &Admin, current: &Value) -> Outcome {
    let Some(id) = current.get("id").as_str() else {
        return (current.clone(), Vec::new());
    };
    let key = pb::ResourceKey {
        kind: "BootstrapToken".into(),
        name: id.to_string(),
        ..Default::default()
    };
    match admin.get(key).await {
        Ok(None) => (Value::Null, Vec::new()),
        Ok(Some(stored)) if stored.manifest["spec"]["revoked"] == true => (Value::Null, Vec::new()),
        Ok(Some(stored)) => {
            let mut state = current.clone();
            let spec = &stored.manifest["spec"];
            state.set("used", Value::from_json(&Type::Number, &spec["used"]));
            state.set(
                "expires_at",
                Value::from_json(&Type::Number, &spec["expiresAt"]),
            );
            (state, Vec::new())
        }
        Err(status) => (
            current.clone(),
            vec![diag::from_status(
                &format!("Cannot read token {id}"),
                &status,
            )],
        ),
    }
}
