//! The provider's configuration: the nodes to talk to and the operator's
//! TLS files, each also from the `MERIDIAN_*` variable the CLI reads, read
//! through a function so tests need not touch the process environment.

use crate::diag::{Diag, Path};
use crate::schema::{Attr, Block, Field};
use crate::value::{Type, Value};
use meridian_identity::tls::{
    control_plane_node, require_loopback, server_list, Credentials, Dialer, TlsFiles,
};
use std::path::PathBuf;

/// The CLI's default `--server`.
pub const DEFAULT_SERVER: &str = "127.0.0.1:7400";

pub fn schema() -> Block {
    let path = |name, what| Attr::optional(name, Type::String, Field::None, what);
    Block::new(
        "Meridian: the admin API of a control plane, over mutual TLS as an admin identity.",
        vec![
            Attr::optional(
                "servers",
                Type::list(Type::String),
                Field::None,
                "Control-plane nodes, `HOST:PORT`, tried in order (a node that fails is left for the next); `MERIDIAN_SERVER` (comma-separated), else `127.0.0.1:7400`.",
            )
            .check(host_port),
            path("cert", "The operator's certificate (PEM file); `MERIDIAN_CERT`."),
            path("key", "Its private key (PEM file); `MERIDIAN_KEY`."),
            path("trust_bundle", "The CA certificates nodes must chain to (PEM file); `MERIDIAN_TRUST_BUNDLE`."),
            Attr::optional("insecure", Type::Bool, Field::None, "Plaintext, to loopback addresses only; excludes the TLS files. `MERIDIAN_INSECURE`."),
        ],
        vec![],
    )
}

/// `HOST:PORT`, as the CLI's `--server` takes it.
fn host_port(value: &serde_json::Value) -> Result<(), String> {
    let text = value.as_str().unwrap_or_default();
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!("'{text}' is not HOST:PORT")),
    }
}

/// What can be told from the configuration alone, before any variable is read.
pub fn validate(config: &Value) -> Vec<Diag> {
    let mut diags = crate::semantic::check_values(&schema(), config, &Path::default());
    let files = ["cert", "key", "trust_bundle"]
        .iter()
        .any(|name| !config.get(name).is_null());
    if config.get("insecure").as_bool() == Some(true) && files {
        diags.push(
            Diag::error(
                "Conflicting TLS settings",
                "insecure (plaintext) excludes cert, key and trust_bundle",
            )
            .at(Path::attr("insecure")),
        );
    }
    diags
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub servers: Vec<String>,
    /// `None`: plaintext (`insecure`).
    pub tls: Option<TlsFiles>,
}

fn truthy(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// The configuration from Terraform's values, falling back on `env`.
pub fn resolve(
    config: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProviderConfig, Vec<Diag>> {
    if config.has_unknown() {
        return Err(vec![Diag::error(
            "Provider configuration not known",
            "the meridian provider's settings must be known before planning; do not derive them from resources",
        )]);
    }
    let servers: Vec<String> = match config.get("servers") {
        Value::List(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => env("MERIDIAN_SERVER")
            .map(|list| server_list(&list).map(str::to_string).collect())
            .unwrap_or_default(),
    };
    let servers = if servers.is_empty() {
        vec![DEFAULT_SERVER.to_string()]
    } else {
        servers
    };
    let text = |name: &str, var: &str| {
        config
            .get(name)
            .as_str()
            .map(str::to_string)
            .or_else(|| env(var))
    };
    let path = |name: &str, var: &str| text(name, var).filter(|p| !p.is_empty()).map(PathBuf::from);
    let insecure = match config.get("insecure") {
        Value::Bool(b) => *b,
        _ => env("MERIDIAN_INSECURE").is_some_and(|v| truthy(&v)),
    };
    let tls = TlsFiles::select(
        insecure,
        path("cert", "MERIDIAN_CERT"),
        path("key", "MERIDIAN_KEY"),
        path("trust_bundle", "MERIDIAN_TRUST_BUNDLE"),
    )
    .map_err(|_| {
        let detail = if insecure {
            "insecure (plaintext) excludes cert, key and trust_bundle"
        } else {
            "mutual TLS is the default: set cert, key and trust_bundle (or MERIDIAN_CERT, MERIDIAN_KEY, MERIDIAN_TRUST_BUNDLE), or insecure = true for plaintext to loopback addresses"
        };
        vec![Diag::error("Incomplete TLS settings", detail)]
    })?;
    if tls.is_none() {
        let refused: Vec<Diag> = servers
            .iter()
            .filter_map(|s| require_loopback("servers", s).err())
            .map(|e| {
                Diag::error("Plaintext beyond loopback", e.to_string()).at(Path::attr("servers"))
            })
            .collect();
        if !refused.is_empty() {
            return Err(refused);
        }
    }
    Ok(ProviderConfig { servers, tls })
}

impl ProviderConfig {
    pub fn dialer(&self) -> Result<Dialer, Diag> {
        let Some(files) = &self.tls else {
            return Ok(Dialer::insecure());
        };
        let credentials = Credentials::from_files(files.clone())
            .map_err(|e| Diag::error("Cannot read the TLS files", e.to_string()))?;
        Dialer::tls(&credentials, control_plane_node)
            .map_err(|e| Diag::error("Cannot set up mutual TLS", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn variables_fill_in_what_the_configuration_leaves_out() {
        let vars = env(&[
            ("MERIDIAN_SERVER", "10.0.0.1:7400, 10.0.0.2:7400"),
            ("MERIDIAN_CERT", "/c.pem"),
            ("MERIDIAN_KEY", "/c.key"),
            ("MERIDIAN_TRUST_BUNDLE", "/ca.pem"),
        ]);
        let config = resolve(&Value::Null, &vars).expect("valid");
        assert_eq!(config.servers, ["10.0.0.1:7400", "10.0.0.2:7400"]);
        assert_eq!(config.tls.expect("tls").cert, PathBuf::from("/c.pem"));
        let mut explicit = Value::Null;
        explicit.set("servers", Value::List(vec![Value::string("127.0.0.1:1")]));
        explicit.set("cert", Value::string("/mine.pem"));
        let config = resolve(&explicit, &vars).expect("valid");
        assert_eq!(config.servers, ["127.0.0.1:1"]);
        assert_eq!(config.tls.expect("tls").cert, PathBuf::from("/mine.pem"));
    }

    #[test]
    fn the_configuration_alone_is_checked() {
        let mut config = Value::Null;
        config.set(
            "servers",
            Value::List(vec![Value::string("cp-1:7400"), Value::string("cp-2")]),
        );
        config.set("insecure", Value::Bool(true));
        config.set("cert", Value::string("/c.pem"));
        let diags = validate(&config);
        let paths: Vec<String> = diags
            .iter()
            .filter_map(|d| d.path.as_ref().map(|p| p.to_string()))
            .collect();
        assert_eq!(paths, ["servers[1]", "insecure"]);
    }

    #[test]
    fn tls_is_the_default_and_plaintext_stays_on_loopback() {
        assert!(resolve(&Value::Null, &env(&[])).is_err());
        let insecure =
            resolve(&Value::Null, &env(&[("MERIDIAN_INSECURE", "true")])).expect("plaintext");
        assert_eq!(insecure.servers, [DEFAULT_SERVER]);
        assert!(insecure.tls.is_none());
        let far = env(&[
            ("MERIDIAN_INSECURE", "1"),
            ("MERIDIAN_SERVER", "10.1.2.3:7400"),
        ]);
        assert!(resolve(&Value::Null, &far).is_err());
    }
}
