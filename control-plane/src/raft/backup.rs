//! The file `meridian snapshot save` writes and `restore` reads: a header
//! line, the state in the Raft snapshot's own encoding, and the SHA-256 of
//! both, so a truncated or altered file is refused rather than restored.

use super::snapshot_data::SnapshotData;
use ring::digest::{digest, SHA256, SHA256_OUTPUT_LEN};

/// The first line of every snapshot file; its version names the layout.
pub const HEADER: &[u8] = b"meridian-snapshot v1\n";
const MAGIC: &[u8] = b"meridian-snapshot ";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a Meridian snapshot file (it does not start with \"meridian-snapshot\")")]
    NotASnapshot,
    #[error("snapshot format {0:?} is not one this meridian reads (v1)")]
    UnsupportedVersion(String),
    #[error("checksum mismatch: the file is corrupt or truncated")]
    Checksum,
    #[error("the snapshot's content does not parse: {0}")]
    Content(#[from] serde_json::Error),
}

/// The bytes of a snapshot file holding `data`.
pub fn encode(data: &SnapshotData) -> Result<Vec<u8>, serde_json::Error> {
    let mut file = HEADER.to_vec();
    file.extend(data.encode()?);
    let sum = digest(&SHA256, &file);
    file.extend_from_slice(sum.as_ref());
    Ok(file)
}

/// Checks a snapshot file (header, checksum, every resource parses) and
/// returns what it holds.
pub fn decode(file: &[u8]) -> Result<SnapshotData, BackupError> {
    if !file.starts_with(MAGIC) {
        return Err(BackupError::NotASnapshot);
    }
    if !file.starts_with(HEADER) {
        let line = file.split(|b| *b == b'\n').next().unwrap_or_default();
        let version = String::from_utf8_lossy(&line[MAGIC.len()..line.len().min(64)]);
        return Err(BackupError::UnsupportedVersion(version.into_owned()));
    }
    let Some(body_len) = file.len().checked_sub(SHA256_OUTPUT_LEN) else {
        return Err(BackupError::Checksum);
    };
    if body_len < HEADER.len() {
        return Err(BackupError::Checksum);
    }
    let (body, sum) = file.split_at(body_len);
    if digest(&SHA256, body).as_ref() != sum {
        return Err(BackupError::Checksum);
    }
    let data = SnapshotData::decode(&body[HEADER.len()..])?;
    data.parsed()?;
    Ok(data)
}

/// The file's checksum as hex, for the operator to note beside it.
pub fn checksum(file: &[u8]) -> String {
    let start = file.len().saturating_sub(SHA256_OUTPUT_LEN);
    file[start..].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Membership;

    fn data() -> SnapshotData {
        SnapshotData {
            last_applied: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(2, 1),
                17,
            )),
            membership: Membership::default(),
            resources: vec![
                r#"{"kind":"Cluster","metadata":{"name":"east"},"spec":{"region":"us-east-1"}}"#
                    .into(),
            ],
            bootstrapped: [1, 2].into(),
            applied_once: Vec::new(),
        }
    }

    #[test]
    fn a_saved_file_reads_back() {
        let file = encode(&data()).expect("encode");
        assert!(file.starts_with(HEADER));
        assert_eq!(decode(&file).expect("decode"), data());
        assert_eq!(checksum(&file).len(), 64);
    }

    #[test]
    fn any_changed_or_missing_byte_is_refused() {
        let file = encode(&data()).expect("encode");
        for at in [HEADER.len(), file.len() / 2, file.len() - 1] {
            let mut corrupt = file.clone();
            corrupt[at] ^= 0x20;
            assert!(
                matches!(decode(&corrupt), Err(BackupError::Checksum)),
                "byte {at}"
            );
        }
        for len in [0, 5, HEADER.len(), HEADER.len() + 10, file.len() - 1] {
            assert!(decode(&file[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn other_files_and_versions_are_named() {
        assert!(matches!(
            decode(b"{\"resources\": []}"),
            Err(BackupError::NotASnapshot)
        ));
        let newer = b"meridian-snapshot v9\n{}0123456789012345678901234567890123";
        assert!(
            matches!(decode(newer), Err(BackupError::UnsupportedVersion(v)) if v == "v9"),
            "{:?}",
            decode(newer)
        );
    }

    #[test]
    fn a_file_with_a_valid_checksum_but_an_unreadable_resource_is_refused() {
        let mut bad = data();
        bad.resources.push("{not a resource".into());
        let file = encode(&bad).expect("encode");
        assert!(matches!(decode(&file), Err(BackupError::Content(_))));
    }
}
