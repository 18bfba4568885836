//! A stand-in for `cargo fuzz` (which needs a nightly toolchain): property
//! tests that feed the identity decoders what an unauthenticated caller or
//! a peer controls, and assert only that each answers without panicking:
//! bootstrap tokens, SPIFFE IDs and certificate signing requests (any text,
//! and a valid request with random bytes changed, inserted or removed,
//! before and inside its base64). A longer run:
//! `PROPTEST_CASES=20000 cargo test -p meridian-identity --test decoders_no_panic`.

use meridian_identity::{
    ca::{self, Signer},
    spiffe::{Identity, SpiffeId},
    token,
};
use meridian_mutation::{edits, mutate};
use proptest::prelude::*;
use rustls::pki_types::{pem::PemObject, CertificateSigningRequestDer};
use std::{sync::OnceLock, time::Duration};

/// One CA and one valid request for every case.
struct Fixture {
    ca: ca::Issued,
    csr_pem: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ca = ca::create_ca("mesh.test", Duration::from_secs(3_600)).expect("a CA");
        let (csr_pem, _key) = ca::csr().expect("a request");
        Fixture { ca, csr_pem }
    })
}

fn id() -> SpiffeId {
    SpiffeId::new(
        "mesh.test",
        Identity::Proxy {
            cluster: "c".into(),
            id: "p".into(),
        },
    )
    .expect("a valid id")
}

fn sign(csr_pem: &str) {
    let fixture = fixture();
    let signer = Signer {
        cert_pem: &fixture.ca.cert_pem,
        key_pem: &fixture.ca.key_pem,
    };
    let _ = ca::sign_csr(&signer, csr_pem, &id(), None, Duration::from_secs(600));
}

proptest! {
    #[test]
    fn tokens_are_answered(text in prop_oneof![
        "\\PC{0,100}",
        "mrd-[0-9a-f]{0,14}\\.[0-9a-fA-F]{0,66}",
        " *mrd-[0-9a-f]{12}\\.[0-9a-f]{64} *",
    ]) {
        if let Ok((id, hash)) = token::parse(&text) {
            prop_assert!(token::is_id(&id));
            prop_assert_eq!(hash.len(), 64);
        }
    }

    #[test]
    fn spiffe_ids_are_answered(text in prop_oneof![
        "\\PC{0,80}",
        "spiffe://[a-z.]{0,12}/(node|proxy|agent|admin|viewer|x)(/[a-z0-9_.-]{0,8}){0,3}",
    ]) {
        if let Ok(parsed) = SpiffeId::parse(&text) {
            // What parses prints back to itself.
            prop_assert_eq!(SpiffeId::parse(&parsed.to_string()), Ok(parsed));
        }
    }

    #[test]
    fn any_signing_request_text_is_answered(text in "\\PC{0,300}") {
        sign(&text);
        sign(&format!("-----BEGIN CERTIFICATE REQUEST-----\n{text}\n-----END CERTIFICATE REQUEST-----\n"));
    }

    #[test]
    fn a_mutated_signing_request_is_answered(edits in edits(1..6)) {
        let mutated = mutate(fixture().csr_pem.as_bytes(), &edits);
        sign(&String::from_utf8_lossy(&mutated));
    }

    #[test]
    fn a_mutated_signing_request_body_is_answered(edits in edits(1..6)) {
        // The DER inside, mutated, then wrapped again: past the base64 layer.
        let pem = &fixture().csr_pem;
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .expect("the request's DER");
        let mutated = mutate(der.as_ref(), &edits);
        sign(&pem_wrap("CERTIFICATE REQUEST", &mutated));
    }
}

/// PEM around `der`, with a small base64 encoder (no dependency for one test).
fn pem_wrap(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    let lines: Vec<&str> = out
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap_or(""))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}
