//! The mesh's certificate authority: create a CA, issue short-lived
//! certificates naming a SPIFFE ID. Crypto only (rcgen, ring); files are the
//! CLI's business.

use crate::enrolment::Enrolment;
use crate::spiffe::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::time::{Duration, SystemTime};

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0}")]
    Invalid(String),
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn ca_params(trust_domain: &str, validity: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("Meridian CA {trust_domain}"));
    name.push(DnType::OrganizationName, "Meridian");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + validity).into();
    params
}

/// A new CA for `trust_domain`, valid for `validity`.
pub fn create_ca(trust_domain: &str, validity: Duration) -> Result<Issued, CaError> {
    SpiffeId::new(trust_domain, crate::spiffe::Identity::Node(1)).map_err(CaError::Invalid)?;
    let key = KeyPair::generate()?;
    let cert = ca_params(trust_domain, validity).self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The CA that signs: its certificate and key, as PEM.
pub struct Signer<'a> {
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
}

fn leaf_params(
    id: &SpiffeId,
    enrolment: Option<&Enrolment>,
    dns_names: &[String],
    validity: Duration,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, id.to_string());
    if let Some(enrolment) = enrolment {
        name.push(DnType::OrganizationalUnitName, enrolment.to_subject_value());
    }
    params.distinguished_name = name;
    params.subject_alt_names =
        vec![SanType::URI(id.to_string().try_into().map_err(|_| {
            CaError::Invalid(format!("'{id}' is not a valid URI"))
        })?)];
    for dns in dns_names {
        let valid = !dns.is_empty()
            && dns.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid {
            return Err(CaError::Invalid(format!("'{dns}' is not a valid DNS name")));
        }
        params.subject_alt_names.push(SanType::DnsName(
            dns.clone()
                .try_into()
                .map_err(|_| CaError::Invalid(format!("'{dns}' is not a valid DNS name")))?,
        ));
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    // Backdated a little for clocks slightly behind ours, but not so much
    // that short lifetimes are mostly in the past.
    let now = SystemTime::now();
    let backdate = (validity / 10).min(Duration::from_secs(60));
    params.not_before = (now - backdate).into();
    params.not_after = (now + validity).into();
    Ok(params)
}

fn issuer<'a>(ca: &Signer<'_>) -> Result<Issuer<'a, KeyPair>, CaError> {
    let key = KeyPair::from_pem(ca.key_pem)?;
    Ok(Issuer::from_ca_cert_pem(ca.cert_pem, key)?)
}

/// A certificate and a new key for `id`, signed by `ca`. `dns_names` are
/// added beside the SPIFFE URI (nodes need their host names).
pub fn issue(
    ca: &Signer<'_>,
    id: &SpiffeId,
    dns_names: &[String],
    validity: Duration,
) -> Result<Issued, CaError> {
    let params = leaf_params(id, None, dns_names, validity)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer(ca)?)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Signs the public key of a PEM certificate signing request for `id`, of
/// the chain enrolled with `enrolment`. Only the key is taken from the
/// request: the names, the subject (so the enrolment) and the lifetime are ours.
pub fn sign_csr(
    ca: &Signer<'_>,
    csr_pem: &str,
    id: &SpiffeId,
    enrolment: Option<&Enrolment>,
    validity: Duration,
) -> Result<String, CaError> {
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        CaError::Invalid(format!("the certificate signing request is invalid: {e}"))
    })?;
    csr.params = leaf_params(id, enrolment, &[], validity)?;
    Ok(csr.signed_by(&issuer(ca)?)?.pem())
}

/// A new key and a PEM signing request for it (the names in it are ignored
/// by the CA, which decides them).
pub fn csr() -> Result<(String, String), CaError> {
    let key = KeyPair::generate()?;
    let request = CertificateParams::default().serialize_request(&key)?;
    Ok((request.pem()?, key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spiffe::Identity;
    use rustls::{
        client::danger::ServerCertVerifier,
        pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    };
    use std::sync::Arc;

    #[test]
    fn issued_certificates_chain_to_the_ca() {
        let ca = create_ca("mesh.example", Duration::from_secs(3600)).expect("CA");
        let id = SpiffeId::new("mesh.example", Identity::Node(1)).expect("id");
        let signer = Signer {
            cert_pem: &ca.cert_pem,
            key_pem: &ca.key_pem,
        };
        let node = issue(
            &signer,
            &id,
            &["node-1.mesh.example".into()],
            Duration::from_secs(600),
        )
        .expect("issue");
        assert!(node.cert_pem.contains("BEGIN CERTIFICATE"));

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).expect("ca pem"))
            .expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("verifier");
        let leaf = CertificateDer::from_pem_slice(node.cert_pem.as_bytes()).expect("leaf pem");
        let name = ServerName::try_from("node-1.mesh.example").expect("name");
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .expect("the node certificate chains to the CA");

        // A certificate from another CA does not.
        let other = create_ca("mesh.example", Duration::from_secs(3600)).expect("CA");
        let stranger = issue(
            &Signer {
                cert_pem: &other.cert_pem,
                key_pem: &other.key_pem,
            },
            &id,
            &["node-1.mesh.example".into()],
            Duration::from_secs(600),
        )
        .expect("issue");
        let stranger = CertificateDer::from_pem_slice(stranger.cert_pem.as_bytes()).expect("pem");
        assert!(verifier
            .verify_server_cert(&stranger, &[], &name, &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(create_ca("Not A Domain", Duration::from_secs(60)).is_err());
        let ca = create_ca("mesh.example", Duration::from_secs(60)).expect("CA");
        let id = SpiffeId::new("mesh.example", Identity::Node(1)).expect("id");
        let signer = Signer {
            cert_pem: &ca.cert_pem,
            key_pem: &ca.key_pem,
        };
        assert!(issue(&signer, &id, &["bad name!".into()], Duration::from_secs(60)).is_err());
        let no_key = Signer {
            cert_pem: &ca.cert_pem,
            key_pem: "not a key",
        };
        assert!(issue(&no_key, &id, &[], Duration::from_secs(60)).is_err());
        assert!(sign_csr(&signer, "not a CSR", &id, None, Duration::from_secs(60)).is_err());
    }

    #[test]
    fn a_signed_csr_names_the_identity_the_ca_chose() {
        let ca = create_ca("mesh.example", Duration::from_secs(3600)).expect("CA");
        let signer = Signer {
            cert_pem: &ca.cert_pem,
            key_pem: &ca.key_pem,
        };
        let (request, key) = csr().expect("csr");
        let id = SpiffeId::new(
            "mesh.example",
            Identity::Proxy {
                cluster: "east".into(),
                id: "web-1".into(),
            },
        )
        .expect("id");
        let cert =
            sign_csr(&signer, &request, &id, None, Duration::from_secs(600)).expect("signed");
        let leaf = crate::tls::Leaf::from_pem(&cert, &key, &crate::tls::provider()).expect("leaf");
        assert_eq!(leaf.id, id);
        assert_eq!(leaf.enrolment, None);
    }

    #[test]
    fn the_enrolment_is_the_cas_to_write_never_the_requests() {
        let ca = create_ca("mesh.example", Duration::from_secs(3600)).expect("CA");
        let signer = Signer {
            cert_pem: &ca.cert_pem,
            key_pem: &ca.key_pem,
        };
        let id = SpiffeId::new(
            "mesh.example",
            Identity::Proxy {
                cluster: "east".into(),
                id: "web-1".into(),
            },
        )
        .expect("id");
        // A workload asks for an enrolment of its choosing in its CSR's subject.
        let key = KeyPair::generate().expect("key");
        let mut wanted = CertificateParams::default();
        wanted
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "enrolment:mrd-aaaaaaaaaaaa");
        let request = wanted
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let key = key.serialize_pem();
        let leaf = |cert: &str| {
            crate::tls::Leaf::from_pem(cert, &key, &crate::tls::provider()).expect("leaf")
        };

        let unenrolled =
            sign_csr(&signer, &request, &id, None, Duration::from_secs(600)).expect("signed");
        assert_eq!(
            leaf(&unenrolled).enrolment,
            None,
            "the CSR's subject is ignored"
        );

        let enrolment = Enrolment::new("mrd-0123456789ab").expect("enrolment");
        let enrolled = sign_csr(
            &signer,
            &request,
            &id,
            Some(&enrolment),
            Duration::from_secs(600),
        )
        .expect("signed");
        let enrolled = leaf(&enrolled);
        assert_eq!(enrolled.enrolment, Some(enrolment));
        assert_eq!(
            enrolled.id, id,
            "the enrolment is not part of the SPIFFE ID"
        );
    }
}
