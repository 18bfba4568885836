//! Verifying a peer's certificate chain against the trust bundle, and naming
//! the SPIFFE ID it proves. Both ends of every connection use this.

use super::credentials::Bundle;
use crate::spiffe::SpiffeId;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(Debug, Clone, Copy)]
pub enum Usage {
    /// The peer is a client of ours.
    Client,
    /// The peer is a server we dialled.
    Server,
}

fn reason(error: &webpki::Error) -> String {
    match error {
        webpki::Error::CertExpired { .. } => "the certificate has expired".into(),
        webpki::Error::CertNotValidYet { .. } => "the certificate is not valid yet".into(),
        // A CA of the same name but another key signs as InvalidSignature.
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            "the certificate is not issued by a CA in the trust bundle".into()
        }
        webpki::Error::RequiredEkuNotFoundContext(_) => {
            "the certificate is not for this use (extended key usage)".into()
        }
        other => format!("the certificate is invalid: {other:?}"),
    }
}

/// The SPIFFE ID that `chain` proves, if it chains to the bundle, is valid
/// `now`, fits `usage`, and lies in `trust_domain`.
pub fn verify_peer(
    bundle: &Bundle,
    trust_domain: Option<&str>,
    chain: &[CertificateDer<'_>],
    now: UnixTime,
    usage: Usage,
) -> Result<SpiffeId, String> {
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or("no client certificate was presented")?;
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("the certificate cannot be parsed: {e:?}"))?;
    let key_usage = match usage {
        Usage::Client => webpki::KeyUsage::client_auth(),
        Usage::Server => webpki::KeyUsage::server_auth(),
    };
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &bundle.anchors,
        intermediates,
        now,
        key_usage,
        None,
        None,
    )
    .map_err(|e| reason(&e))?;
    let id = crate::x509::facts(leaf)?.id;
    if let Some(domain) = trust_domain {
        if id.trust_domain != domain {
            return Err(format!("{id} is not in the trust domain {domain}"));
        }
    }
    Ok(id)
}

/// The handshake signature checks both ends share: TLS 1.3 only, with the
/// provider's algorithms.
pub(crate) struct Signatures<'a>(pub &'a CryptoProvider);

impl Signatures<'_> {
    pub fn tls12(&self) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    pub fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    pub fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
