//! A workload's TLS credentials: its certificate and key, and the trust
//! bundle it verifies peers against. Held behind a lock so that renewal and
//! rotation swap them in place; live connections keep the credentials they
//! were made with, new handshakes use the new ones.

use crate::spiffe::{Identity, SpiffeId};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, TrustAnchor};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Where a workload's credentials live on disk.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM roots: one CA, or the old and the new one during a rotation.
    pub bundle: PathBuf,
}

impl TlsFiles {
    /// The TLS files from a binary's flags: all three, unless `insecure`
    /// (plaintext), which excludes them.
    pub fn select(
        insecure: bool,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        bundle: Option<PathBuf>,
    ) -> Result<Option<TlsFiles>, TlsError> {
        match (insecure, cert, key, bundle) {
            (true, None, None, None) => Ok(None),
            (true, ..) => Err(TlsError::Invalid(
                "--insecure (plaintext) excludes --cert, --key and --trust-bundle".into(),
            )),
            (false, Some(cert), Some(key), Some(bundle)) => {
                Ok(Some(TlsFiles { cert, key, bundle }))
            }
            (false, ..) => Err(TlsError::Invalid(
                "mutual TLS is the default: pass --cert, --key and --trust-bundle \
                 (or --insecure for plaintext on loopback addresses only)"
                    .into(),
            )),
        }
    }
}

/// A certificate with its key, and what it says.
pub struct Leaf {
    pub certified: Arc<CertifiedKey>,
    pub id: SpiffeId,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The bootstrap token its chain was enrolled with, if it was.
    pub enrolment: Option<crate::enrolment::Enrolment>,
}

/// The trust bundle: the roots peers' certificates must chain to.
pub struct Bundle {
    pub anchors: Vec<TrustAnchor<'static>>,
    pub pem: String,
}

/// What is in force now.
pub struct Loaded {
    /// None for a workload that has only the bundle so far (bootstrapping).
    pub leaf: Option<Leaf>,
    pub bundle: Arc<Bundle>,
}

pub struct Credentials {
    files: Option<TlsFiles>,
    current: RwLock<Arc<Loaded>>,
    pub(crate) provider: Arc<CryptoProvider>,
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Bundle {
    pub fn from_pem(pem: &str) -> Result<Bundle, TlsError> {
        let mut anchors = Vec::new();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| TlsError::Invalid(format!("trust bundle: {e}")))?;
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| TlsError::Invalid(format!("trust bundle: {e}")))?
                .to_owned();
            anchors.push(anchor);
        }
        if anchors.is_empty() {
            return Err(TlsError::Invalid(
                "trust bundle: no PEM certificate in it".into(),
            ));
        }
        Ok(Bundle {
            anchors,
            pem: pem.to_string(),
        })
    }
}

impl Leaf {
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        provider: &CryptoProvider,
    ) -> Result<Leaf, TlsError> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| TlsError::Invalid(format!("certificate: {e}")))?;
        let first = chain
            .first()
            .ok_or_else(|| TlsError::Invalid("certificate: no PEM certificate in it".into()))?;
        let facts = crate::x509::facts(first).map_err(TlsError::Invalid)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TlsError::Invalid(format!("private key: {e}")))?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Invalid(format!("private key: {e}")))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|_| {
            TlsError::Invalid("the private key does not match the certificate".into())
        })?;
        Ok(Leaf {
            certified: Arc::new(certified),
            id: facts.id,
            not_before: facts.not_before,
            not_after: facts.not_after,
            enrolment: facts.enrolment,
        })
    }

    /// When to renew: two thirds into the certificate's lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + lifetime * 2 / 3
    }
}

pub(crate) fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| file_error(path, e))
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id().map(|i| i.to_string()))
            .finish()
    }
}

impl Credentials {
    /// Credentials from files, re-read by [`Credentials::reload`].
    pub fn from_files(files: TlsFiles) -> Result<Arc<Credentials>, TlsError> {
        let provider = provider();
        let loaded = load_files(&files, &provider)?;
        Ok(Arc::new(Credentials {
            files: Some(files),
            current: RwLock::new(Arc::new(loaded)),
            provider,
        }))
    }

    /// Credentials held in memory only.
    pub fn from_pem(
        bundle_pem: &str,
        leaf: Option<(&str, &str)>,
    ) -> Result<Arc<Credentials>, TlsError> {
        let provider = provider();
        let bundle = Bundle::from_pem(bundle_pem)?;
        let leaf = match leaf {
            Some((cert, key)) => Some(Leaf::from_pem(cert, key, &provider)?),
            None => None,
        };
        Ok(Arc::new(Credentials {
            files: None,
            current: RwLock::new(Arc::new(Loaded {
                leaf,
                bundle: Arc::new(bundle),
            })),
            provider,
        }))
    }

    pub fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Seconds until the certificate in force expires (negative once it has),
    /// with the identity it names; None without a certificate.
    pub fn expiry(&self) -> Option<(SpiffeId, i64)> {
        let loaded = self.current();
        let leaf = loaded.leaf.as_ref()?;
        let now = SystemTime::now();
        let seconds = match leaf.not_after.duration_since(now) {
            Ok(left) => left.as_secs() as i64,
            Err(past) => -(past.duration().as_secs() as i64),
        };
        Some((leaf.id.clone(), seconds))
    }

    /// Refuses a certificate that does not name `expected` (in its own trust domain).
    pub fn expect_identity(&self, expected: &Identity) -> Result<(), TlsError> {
        match self.id() {
            Some(id) if id.identity == *expected => Ok(()),
            Some(id) => Err(TlsError::Invalid(format!(
                "the certificate names {id}, not {}",
                SpiffeId {
                    trust_domain: id.trust_domain.clone(),
                    identity: expected.clone(),
                }
            ))),
            None => Err(TlsError::Invalid("no certificate is in force".into())),
        }
    }

    /// This workload's own identity, once it has a certificate.
    pub fn id(&self) -> Option<SpiffeId> {
        self.current().leaf.as_ref().map(|l| l.id.clone())
    }

    /// Puts a new certificate and bundle in force, e.g. after a renewal.
    pub fn install(&self, leaf: Leaf, bundle: Bundle) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Loaded {
            leaf: Some(leaf),
            bundle: Arc::new(bundle),
        });
    }

    /// Re-reads the files; keeps what is in force when they are unreadable
    /// or invalid (a half-written rotation must not break the workload).
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let loaded = load_files(files, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(())
    }

    /// Re-reads the files every `every`, so that rotated certificates and
    /// bundles take effect without a restart.
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let credentials = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                tokio::time::sleep(every).await;
                let Some(credentials) = credentials.upgrade() else {
                    return;
                };
                let Some(files) = &credentials.files else {
                    return;
                };
                let stamp = [&files.cert, &files.key, &files.bundle]
                    .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
                if last.as_ref() == Some(&stamp) {
                    continue;
                }
                match credentials.reload() {
                    Ok(()) => {
                        if last.is_some() {
                            tracing::info!(id = ?credentials.id().map(|i| i.to_string()), "reloaded TLS credentials");
                        }
                        last = Some(stamp);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "TLS credentials not reloaded; keeping those in force")
                    }
                }
            }
        })
    }
}

fn load_files(files: &TlsFiles, provider: &CryptoProvider) -> Result<Loaded, TlsError> {
    let bundle =
        Bundle::from_pem(&read(&files.bundle)?).map_err(|e| file_error(&files.bundle, e))?;
    let leaf = Leaf::from_pem(&read(&files.cert)?, &read(&files.key)?, provider)
        .map_err(|e| file_error(&files.cert, e))?;
    Ok(Loaded {
        leaf: Some(leaf),
        bundle: Arc::new(bundle),
    })
}
