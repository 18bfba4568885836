//! Where a CA lives on disk, as `meridian certs create-ca` writes it:
//! `ca.pem`, `ca.key` (readable by its owner only) and `trust-domain`.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct CaDir(PathBuf);

/// A CA's certificate and key, read as PEM.
pub struct CaPem {
    pub cert: String,
    pub key: String,
}

fn read(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl CaDir {
    pub fn new(dir: impl Into<PathBuf>) -> CaDir {
        CaDir(dir.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn cert_path(&self) -> PathBuf {
        self.0.join("ca.pem")
    }

    pub fn key_path(&self) -> PathBuf {
        self.0.join("ca.key")
    }

    pub fn trust_domain_path(&self) -> PathBuf {
        self.0.join("trust-domain")
    }

    pub fn read(&self) -> io::Result<CaPem> {
        Ok(CaPem {
            cert: read(&self.cert_path())?,
            key: read(&self.key_path())?,
        })
    }

    pub fn trust_domain(&self) -> io::Result<String> {
        Ok(read(&self.trust_domain_path())?.trim().to_string())
    }

    /// Refuses a CA key that others than its owner may read.
    pub fn check_key_is_private(&self) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let key = self.key_path();
        let mode = std::fs::metadata(&key)
            .map_err(|e| format!("{}: {e}", key.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is readable by others (mode {:o}); chmod 600 it",
                key.display(),
                mode & 0o777
            ));
        }
        Ok(())
    }
}

impl CaPem {
    /// The signer these files make.
    pub fn signer(&self) -> crate::ca::Signer<'_> {
        crate::ca::Signer {
            cert_pem: &self.cert,
            key_pem: &self.key,
        }
    }
}
