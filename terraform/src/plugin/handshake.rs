//! The go-plugin handshake: the environment Terraform starts a provider
//! with, and the one line the provider answers on stdout
//! (`1|6|tcp|127.0.0.1:PORT|grpc|CERT`).

use base64::Engine;

/// The cookie Terraform sets so that a provider run by hand can say so.
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// go-plugin's own protocol version.
pub const CORE_PROTOCOL: u32 = 1;
/// The Terraform plugin protocol this provider speaks.
pub const APP_PROTOCOL: u32 = 6;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error(
        "this binary is a Terraform plugin: Terraform starts it. To use it, declare the provider \
         (source \"meridian/meridian\") and run terraform; see docs/terraform.md"
    )]
    NotStartedByTerraform,
    #[error("Terraform offers plugin protocol versions {0}, and this provider speaks only 6 (Terraform 1.0 or later)")]
    NoCommonProtocol(String),
    #[error("PLUGIN_MIN_PORT and PLUGIN_MAX_PORT must be ports with min <= max, not {0}..{1}")]
    BadPortRange(String, String),
}

/// What Terraform asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Ports to listen on, when Terraform names a range.
    pub ports: Option<(u16, u16)>,
    /// Terraform's own certificate (PEM), when it wants mutual TLS.
    pub client_cert: Option<String>,
}

/// Reads the environment Terraform set (through `env`, so tests need not set any).
pub fn host(env: &dyn Fn(&str) -> Option<String>) -> Result<Host, HandshakeError> {
    if env(MAGIC_COOKIE_KEY).as_deref() != Some(MAGIC_COOKIE_VALUE) {
        return Err(HandshakeError::NotStartedByTerraform);
    }
    if let Some(versions) = env("PLUGIN_PROTOCOL_VERSIONS") {
        let offered = versions
            .split(',')
            .any(|v| v.trim() == APP_PROTOCOL.to_string());
        if !offered {
            return Err(HandshakeError::NoCommonProtocol(versions));
        }
    }
    let ports = match (env("PLUGIN_MIN_PORT"), env("PLUGIN_MAX_PORT")) {
        (Some(min), Some(max)) => match (min.parse::<u16>(), max.parse::<u16>()) {
            (Ok(0), Ok(0)) => None,
            (Ok(lo), Ok(hi)) if lo <= hi => Some((lo, hi)),
            _ => return Err(HandshakeError::BadPortRange(min, max)),
        },
        _ => None,
    };
    let client_cert = env("PLUGIN_CLIENT_CERT").filter(|c| !c.trim().is_empty());
    Ok(Host { ports, client_cert })
}

/// The line go-plugin reads: versions, where to connect, and with AutoMTLS
/// the provider's certificate as unpadded base64 DER.
pub fn line(addr: std::net::SocketAddr, server_cert_der: Option<&[u8]>) -> String {
    let mut line = format!("{CORE_PROTOCOL}|{APP_PROTOCOL}|tcp|{addr}|grpc");
    if let Some(der) = server_cert_der {
        line.push('|');
        line.push_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(der));
    }
    line
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
    fn refuses_to_run_without_terraform() {
        assert_eq!(host(&env(&[])), Err(HandshakeError::NotStartedByTerraform));
    }

    #[test]
    fn needs_protocol_six_and_reads_ports_and_the_client_certificate() {
        let old = env(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_PROTOCOL_VERSIONS", "4,5"),
        ]);
        assert!(matches!(
            host(&old),
            Err(HandshakeError::NoCommonProtocol(_))
        ));
        let new = env(&[
            (MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE),
            ("PLUGIN_PROTOCOL_VERSIONS", "5,6"),
            ("PLUGIN_MIN_PORT", "10000"),
            ("PLUGIN_MAX_PORT", "25000"),
            ("PLUGIN_CLIENT_CERT", "-----BEGIN CERTIFICATE-----"),
        ]);
        let host = host(&new).expect("valid");
        assert_eq!(host.ports, Some((10000, 25000)));
        assert!(host.client_cert.is_some());
    }

    #[test]
    fn the_line_carries_the_certificate_without_padding() {
        let addr = "127.0.0.1:10123".parse().expect("addr");
        assert_eq!(line(addr, None), "1|6|tcp|127.0.0.1:10123|grpc");
        let with_cert = line(addr, Some(&[1, 2, 3, 4]));
        assert_eq!(with_cert, "1|6|tcp|127.0.0.1:10123|grpc|AQIDBA");
    }
}
