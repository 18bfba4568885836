//! The certificate-expiry gauge nodes and proxies export:
//! `..._tls_certificate_expiry_seconds{identity}`, absent without a certificate.

use crate::tls::Credentials;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::{family::Family, gauge::Gauge};
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabels {
    identity: String,
}

pub struct ExpiryGauge {
    family: Family<IdentityLabels, Gauge>,
    credentials: OnceLock<Arc<Credentials>>,
}

impl ExpiryGauge {
    /// Registers `tls_certificate_expiry_seconds` in `registry`.
    pub fn register(registry: &mut Registry, help: &str) -> ExpiryGauge {
        let family = Family::<IdentityLabels, Gauge>::default();
        registry.register("tls_certificate_expiry_seconds", help, family.clone());
        ExpiryGauge {
            family,
            credentials: OnceLock::new(),
        }
    }

    /// Reports the certificate in force in `credentials` from now on.
    pub fn track(&self, credentials: Arc<Credentials>) {
        let _ = self.credentials.set(credentials);
    }

    /// Sets the gauge to the seconds left now; call before rendering.
    pub fn refresh(&self) {
        if let Some((id, seconds)) = self.credentials.get().and_then(|c| c.expiry()) {
            self.family.clear();
            self.family
                .get_or_create(&IdentityLabels {
                    identity: id.to_string(),
                })
                .set(seconds);
        }
    }
}
