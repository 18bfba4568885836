//! The enrolment a certificate descends from: the id of the bootstrap token
//! that issued the first certificate of its renewal chain. The CA writes it
//! into every certificate of the chain, so that a renewal can be tied to
//! that token, which an operator can revoke.
//!
//! It travels in the certificate's subject, as an `OU` attribute
//! `enrolment:mrd-…`: the subject is not part of the SPIFFE ID (the URI SAN
//! is), is signed by the CA like the rest, is shown by `openssl x509
//! -subject`, and needs no object identifier of our own (Kubernetes reads
//! client certificates' groups from the subject the same way). The CA never
//! copies a subject from a signing request, so a workload cannot choose it.

use std::fmt;

const PREFIX: &str = "enrolment:";

/// The id of the token a certificate chain was enrolled with (`mrd-…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Enrolment(String);

impl Enrolment {
    /// The enrolment of a chain started with the token `token_id`.
    pub fn new(token_id: &str) -> Result<Self, String> {
        if crate::token::is_id(token_id) {
            Ok(Enrolment(token_id.to_string()))
        } else {
            Err(format!("'{token_id}' is not a token id (mrd-ID)"))
        }
    }

    pub fn token_id(&self) -> &str {
        &self.0
    }

    /// The subject `OU` value that carries it.
    pub(crate) fn to_subject_value(&self) -> String {
        format!("{PREFIX}{}", self.0)
    }

    /// From a subject `OU` value: None if the value is not an enrolment;
    /// an error if it claims to be one but names no token id.
    pub(crate) fn from_subject_value(value: &str) -> Option<Result<Self, String>> {
        value.strip_prefix(PREFIX).map(Enrolment::new)
    }
}

impl fmt::Display for Enrolment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_token_ids_are_enrolments() {
        let enrolment = Enrolment::new("mrd-0123456789ab").expect("id");
        assert_eq!(enrolment.to_subject_value(), "enrolment:mrd-0123456789ab");
        assert_eq!(
            Enrolment::from_subject_value("enrolment:mrd-0123456789ab"),
            Some(Ok(enrolment))
        );
        assert_eq!(Enrolment::from_subject_value("Meridian"), None);
        assert!(matches!(
            Enrolment::from_subject_value("enrolment:mrd-xyz"),
            Some(Err(_))
        ));
        assert!(Enrolment::new("mrd-0123456789ab.secret").is_err());
    }
}
