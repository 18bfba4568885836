//! What a certificate says: its SPIFFE ID and validity. Parsing only; the
//! chain is verified elsewhere.

use crate::spiffe::SpiffeId;
use rustls::pki_types::CertificateDer;
use std::time::{Duration, SystemTime};
use x509_parser::extensions::GeneralName;

pub struct Facts {
    pub id: SpiffeId,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

fn time(t: x509_parser::time::ASN1Time) -> SystemTime {
    let seconds = t.timestamp();
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds as u64)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

/// The SPIFFE ID (the one `spiffe://` URI SAN) and validity of `cert`.
pub fn facts(cert: &CertificateDer<'_>) -> Result<Facts, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("certificate: cannot parse: {e}"))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| format!("certificate: bad subjectAltName: {e}"))?
        .ok_or("certificate: no subjectAltName, so no SPIFFE ID")?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
        _ => None,
    });
    let uri = uris.next().ok_or("certificate: no spiffe:// URI in it")?;
    if uris.next().is_some() {
        return Err("certificate: more than one spiffe:// URI".into());
    }
    let id = SpiffeId::parse(uri).map_err(|e| format!("certificate: {e}"))?;
    Ok(Facts {
        id,
        not_before: time(parsed.validity().not_before),
        not_after: time(parsed.validity().not_after),
    })
}
