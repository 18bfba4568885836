//! What a certificate says: its SPIFFE ID, validity and enrolment. Parsing
//! only; the chain is verified elsewhere.

use crate::enrolment::Enrolment;
use crate::spiffe::SpiffeId;
use rustls::pki_types::CertificateDer;
use std::time::{Duration, SystemTime};
use x509_parser::extensions::GeneralName;

pub struct Facts {
    pub id: SpiffeId,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The token the certificate's chain was enrolled with, if any.
    pub enrolment: Option<Enrolment>,
}

fn time(t: x509_parser::time::ASN1Time) -> SystemTime {
    let seconds = t.timestamp();
    if seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds as u64)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

/// The enrolment in `cert`'s subject: at most one.
fn enrolment(
    parsed: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<Option<Enrolment>, String> {
    let mut found = parsed
        .subject()
        .iter_organizational_unit()
        .filter_map(|ou| ou.as_str().ok())
        .filter_map(Enrolment::from_subject_value);
    let first = found
        .next()
        .transpose()
        .map_err(|e| format!("certificate: {e}"))?;
    if found.next().is_some() {
        return Err("certificate: more than one enrolment in its subject".into());
    }
    Ok(first)
}

/// The SPIFFE ID (the one `spiffe://` URI SAN), validity and enrolment of `cert`.
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
        enrolment: enrolment(&parsed)?,
    })
}
