//! Static stability: the last applied xDS resources, written atomically to
//! the state dir, so a proxy restarted without a control plane still routes.

use crate::config::Resources;
use std::{collections::BTreeMap, path::Path};

const FILE: &str = "xds-resources.json";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn save(dir: &Path, resources: &Resources) -> std::io::Result<()> {
    let encoded: BTreeMap<&String, BTreeMap<&String, (&String, String)>> = resources
        .iter()
        .map(|(t, m)| (t, m.iter().map(|(n, (v, b))| (n, (v, hex(b)))).collect()))
        .collect();
    let json = serde_json::to_vec(&encoded).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, json)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(tmp, dir.join(FILE))
}

/// The saved resources; empty when there are none or they cannot be read.
pub fn load(dir: &Path) -> Resources {
    let Ok(bytes) = std::fs::read(dir.join(FILE)) else {
        return Resources::new();
    };
    let Ok(encoded) =
        serde_json::from_slice::<BTreeMap<String, BTreeMap<String, (String, String)>>>(&bytes)
    else {
        tracing::warn!("the saved xDS state does not parse; starting without it");
        return Resources::new();
    };
    encoded
        .into_iter()
        .map(|(t, m)| {
            let decoded = m
                .into_iter()
                .filter_map(|(n, (v, b))| Some((n, (v, unhex(&b)?))))
                .collect();
            (t, decoded)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().expect("dir");
        let mut resources = Resources::new();
        resources
            .entry("t".into())
            .or_default()
            .insert("n".into(), ("v1".into(), vec![0, 1, 254, 255]));
        save(dir.path(), &resources).expect("save");
        assert_eq!(load(dir.path()), resources);
        assert!(load(&dir.path().join("missing")).is_empty());
    }
}
