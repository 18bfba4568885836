//! Bootstrap tokens as users handle them: `mrd-ID.SECRET`. The ID names the
//! stored token; only the SHA-256 of the secret is ever stored.

use ring::rand::SecureRandom;

const PREFIX: &str = "mrd-";

/// A token just made: what to hand the user, and what to store.
pub struct NewToken {
    pub id: String,
    pub secret_sha256: String,
    pub token: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random(n: usize) -> Result<Vec<u8>, String> {
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system's random generator failed".to_string())?;
    Ok(bytes)
}

pub fn sha256_hex(secret: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, secret.as_bytes()).as_ref())
}

pub fn generate() -> Result<NewToken, String> {
    let id = format!("{PREFIX}{}", hex(&random(6)?));
    let secret = hex(&random(32)?);
    Ok(NewToken {
        token: format!("{id}.{secret}"),
        secret_sha256: sha256_hex(&secret),
        id,
    })
}

fn is_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `id` is a token's id (`mrd-` and 12 lowercase hex digits).
pub fn is_id(id: &str) -> bool {
    id.strip_prefix(PREFIX)
        .is_some_and(|hex| hex.len() == 12 && is_hex(hex))
}

/// The stored token's ID and the secret's hash, from what a user presents.
pub fn parse(token: &str) -> Result<(String, String), String> {
    let (id, secret) = token
        .trim()
        .split_once('.')
        .ok_or("the token is malformed: expected mrd-ID.SECRET")?;
    let well_formed = is_id(id) && secret.len() == 64 && is_hex(secret);
    if !well_formed {
        return Err("the token is malformed: expected mrd-ID.SECRET".into());
    }
    Ok((id.to_string(), sha256_hex(secret)))
}

/// Compares two hashes in time independent of where they differ.
pub fn same_hash(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_to_their_stored_hash() {
        let new = generate().expect("token");
        let (id, hash) = parse(&new.token).expect("parses");
        assert_eq!(id, new.id);
        assert!(is_id(&new.id));
        assert!(!is_id("mrd-0123456789AB") && !is_id("mrd-0123") && !is_id("0123456789ab"));
        assert!(same_hash(&hash, &new.secret_sha256));
        assert!(!same_hash(&hash, &sha256_hex("other")));
        for bad in [
            "",
            "mrd-abc",
            "mrd-zzzzzzzzzzzz.00",
            "x.y",
            &new.token[..20],
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
