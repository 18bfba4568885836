//! go-plugin's AutoMTLS: the provider makes itself a certificate for
//! `localhost`, hands it to Terraform in the handshake line, and accepts only
//! the client certificate Terraform passed in `PLUGIN_CLIENT_CERT`.
//!
//! Terraform's certificate is ECDSA P-521, which ring does not verify, so
//! the proof that the client holds its key (the handshake signature) is
//! checked with the pure-Rust `p521` crate; other keys go to ring.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AutoMtlsError {
    #[error("PLUGIN_CLIENT_CERT holds no PEM certificate: {0}")]
    ClientCert(String),
    #[error("cannot make the provider's certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The server side of AutoMTLS.
pub struct AutoMtls {
    pub config: Arc<ServerConfig>,
    /// The provider's certificate, for the handshake line.
    pub cert_der: Vec<u8>,
}

/// TLS 1.2 and 1.3 with a fresh self-signed certificate, trusting exactly `client_pem`.
pub fn server(client_pem: &str) -> Result<AutoMtls, AutoMtlsError> {
    let client = CertificateDer::from_pem_slice(client_pem.as_bytes())
        .map_err(|e| AutoMtlsError::ClientCert(e.to_string()))?;
    let (cert_der, key_der) = self_signed()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(Arc::new(Pinned {
            client: client.into_owned(),
            provider,
        }))
        .with_single_cert(
            vec![CertificateDer::from(cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(AutoMtls {
        config: Arc::new(config),
        cert_der,
    })
}

/// A certificate for `localhost`, as go-plugin's own: self-signed, a CA (the
/// client trusts it as its own root), for server and client auth.
fn self_signed() -> Result<(Vec<u8>, Vec<u8>), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.distinguished_name.push(
        rcgen::DnType::OrganizationName,
        "terraform-provider-meridian",
    );
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::KeyAgreement,
        rcgen::KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(30)).into();
    params.not_after = (now + std::time::Duration::from_secs(365 * 24 * 3600)).into();
    let cert = params.self_signed(&key)?;
    Ok((cert.der().to_vec(), key.serialize_der()))
}

/// Accepts one certificate, byte for byte, and checks that the client holds its key.
#[derive(Debug)]
struct Pinned {
    client: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

/// The OID of the P-521 curve (secp521r1), 1.3.132.0.35.
const SECP521R1: &str = "1.3.132.0.35";

/// The curve and public point of an ECDSA certificate, or `None` for other keys.
fn ec_key(cert: &CertificateDer<'_>) -> Option<(String, Vec<u8>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let spki = &parsed.tbs_certificate.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()?
        .as_oid()
        .ok()?
        .to_id_string();
    Some((curve, spki.subject_public_key.data.to_vec()))
}

fn verify_p521(
    message: &[u8],
    point: &[u8],
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    use p521::ecdsa::signature::Verifier;
    if dss.scheme != SignatureScheme::ECDSA_NISTP521_SHA512 {
        return Err(rustls::Error::General(format!(
            "a P-521 key must sign with ecdsa_secp521r1_sha512, not {:?}",
            dss.scheme
        )));
    }
    let bad = |what: &str| rustls::Error::General(format!("client signature: {what}"));
    let key =
        p521::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|_| bad("bad public key"))?;
    let signature =
        p521::ecdsa::Signature::from_der(dss.signature()).map_err(|_| bad("malformed"))?;
    key.verify(message, &signature)
        .map_err(|_| bad("does not verify"))?;
    Ok(HandshakeSignatureValid::assertion())
}

impl ClientCertVerifier for Pinned {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.client.as_ref() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the client certificate is not the one Terraform passed in PLUGIN_CLIENT_CERT"
                    .into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match ec_key(cert) {
            Some((curve, point)) if curve == SECP521R1 => verify_p521(message, &point, dss),
            _ => rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            ),
        }
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        match ec_key(cert) {
            Some((curve, point)) if curve == SECP521R1 => verify_p521(message, &point, dss),
            _ => rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            ),
        }
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // P-521 first: a TLS 1.2 client then signs with SHA-512.
        let mut schemes = vec![SignatureScheme::ECDSA_NISTP521_SHA512];
        schemes.extend(
            self.provider
                .signature_verification_algorithms
                .supported_schemes(),
        );
        schemes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_localhost_ca_certificate_and_pins_the_client() {
        let client =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("client cert");
        let mtls = server(&client.cert.pem()).expect("server tls");
        let (_, parsed) = x509_parser::parse_x509_certificate(&mtls.cert_der).expect("parses");
        assert!(parsed.is_ca());
        assert!(format!("{:?}", parsed.subject_alternative_name()).contains("localhost"));
        assert!(server("not a certificate").is_err());
    }
}
