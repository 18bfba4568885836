//! The demo mesh's own CA, in its temporary directory, and a certificate
//! for every identity the demo runs.

use crate::cli::certs::write_new;
use meridian_identity::{
    ca,
    ca_dir::CaDir,
    spiffe::{Identity, SpiffeId},
    tls::TlsFiles,
};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// The mesh's trust domain.
const TRUST_DOMAIN: &str = "demo.meridian";

/// Where one identity's certificate and key are.
fn credentials(dir: &Path, name: &str, bundle: &Path) -> TlsFiles {
    TlsFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        bundle: bundle.to_path_buf(),
    }
}

/// The mesh's CA, and a certificate for every identity the demo runs.
pub struct Pki {
    pub ca: CaDir,
    dir: PathBuf,
}

impl Pki {
    pub fn create(dir: &Path) -> anyhow::Result<Pki> {
        let ca = CaDir::new(dir.join("ca"));
        std::fs::create_dir_all(ca.path())?;
        let issued = ca::create_ca(TRUST_DOMAIN, Duration::from_secs(24 * 3600))?;
        write_new(&ca.key_path(), &issued.key_pem, true)?;
        write_new(&ca.cert_path(), &issued.cert_pem, false)?;
        write_new(&ca.trust_domain_path(), &format!("{TRUST_DOMAIN}\n"), false)?;
        Ok(Pki {
            ca,
            dir: dir.to_path_buf(),
        })
    }

    pub fn issue(&self, name: &str, identity: Identity) -> anyhow::Result<TlsFiles> {
        let id = SpiffeId::new(TRUST_DOMAIN, identity).map_err(anyhow::Error::msg)?;
        let issued = ca::issue(
            &self.ca.read()?.signer(),
            &id,
            &[],
            Duration::from_secs(24 * 3600),
        )?;
        let files = credentials(&self.dir, name, &self.ca.cert_path());
        write_new(&files.cert, &issued.cert_pem, false)?;
        write_new(&files.key, &issued.key_pem, true)?;
        Ok(files)
    }
}

pub fn tls_args(files: &TlsFiles) -> Vec<String> {
    vec![
        "--cert".into(),
        files.cert.display().to_string(),
        "--key".into(),
        files.key.display().to_string(),
        "--trust-bundle".into(),
        files.bundle.display().to_string(),
    ]
}
