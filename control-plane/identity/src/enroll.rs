//! Getting and keeping a certificate: the first one with a bootstrap token,
//! then renewal at two thirds of its lifetime, authenticated by the current
//! one. The new certificate is swapped in place, so open streams carry on.

use crate::ca;
use crate::spiffe::Identity;
use crate::tls::{
    control_plane_node, require_loopback, Bundle, Credentials, Dialer, Leaf, TlsError, TlsFiles,
};
use meridian_proto::v1::{certificates_client::CertificatesClient, IssueRequest};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("connecting to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("the control plane refused: {} ({:?})", .0.message(), .0.code())]
    Refused(tonic::Status),
    #[error("writing {path}: {message}")]
    Write { path: String, message: String },
}

/// A certificate just issued, with its key and the bundle to trust.
pub struct Enrolled {
    pub cert_pem: String,
    pub key_pem: String,
    pub bundle_pem: String,
}

/// Asks the control plane at `addr` for a certificate: with `token` the
/// first time (naming `name`), without it to renew the dialer's own.
pub async fn request(
    dialer: &Dialer,
    addr: &str,
    token: Option<&str>,
    name: &str,
) -> Result<Enrolled, EnrollError> {
    let (csr_pem, key_pem) =
        ca::csr().map_err(|e| EnrollError::Tls(TlsError::Invalid(e.to_string())))?;
    let channel = dialer
        .connect(addr)
        .await
        .map_err(|e| EnrollError::Connect {
            addr: addr.to_string(),
            message: e.to_string(),
        })?;
    let reply = CertificatesClient::new(channel)
        .issue(IssueRequest {
            csr_pem,
            token: token.unwrap_or_default().to_string(),
            name: name.to_string(),
        })
        .await
        .map_err(EnrollError::Refused)?
        .into_inner();
    Ok(Enrolled {
        cert_pem: reply.cert_pem,
        key_pem,
        bundle_pem: reply.trust_bundle_pem,
    })
}

/// Writes `contents` to a new temporary file beside `path` (0600 from the
/// start when `private`, else 0644), flushed to disk.
fn write_temp(
    path: &Path,
    contents: &str,
    private: bool,
) -> Result<tempfile::NamedTempFile, EnrollError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let error = |e: std::io::Error| EnrollError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // NamedTempFile creates a fresh file, 0600, never following a symlink.
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(error)?;
    if !private {
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(error)?;
    }
    file.write_all(contents.as_bytes()).map_err(error)?;
    file.as_file().sync_all().map_err(error)?;
    Ok(file)
}

impl Enrolled {
    /// Saves the certificate, key and bundle where `files` say: all three
    /// are written in full before any replaces the old one.
    pub fn save(&self, files: &TlsFiles) -> Result<(), EnrollError> {
        let key = write_temp(&files.key, &self.key_pem, true)?;
        let cert = write_temp(&files.cert, &self.cert_pem, false)?;
        let bundle = write_temp(&files.bundle, &self.bundle_pem, false)?;
        for (file, path) in [
            (key, &files.key),
            (cert, &files.cert),
            (bundle, &files.bundle),
        ] {
            file.persist(path).map_err(|e| EnrollError::Write {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// Puts the certificate in force in `credentials`.
    pub fn install(&self, credentials: &Credentials) -> Result<(), EnrollError> {
        let leaf = Leaf::from_pem(&self.cert_pem, &self.key_pem, &crate::tls::provider())?;
        let bundle = Bundle::from_pem(&self.bundle_pem)?;
        credentials.install(leaf, bundle);
        Ok(())
    }
}

/// Credentials for a proxy or agent: from `files` if they hold a certificate
/// still valid, else enrolled with `token` against one of `addrs` and saved.
async fn obtain(
    files: &TlsFiles,
    token: Option<&str>,
    name: &str,
    addrs: &[String],
) -> Result<Arc<Credentials>, EnrollError> {
    let existing = Credentials::from_files(files.clone());
    let token = match (existing, token) {
        (Ok(credentials), _) if credentials.expiry().is_some_and(|(_, left)| left > 0) => {
            return Ok(credentials)
        }
        // Nothing usable and no token: say what is wrong with the files.
        (existing, None) => return Ok(existing?),
        (_, Some(token)) => token,
    };
    let bundle = crate::tls::read(&files.bundle)?;
    let bootstrap = Credentials::from_pem(&bundle, None)?;
    let dialer = Dialer::tls(&bootstrap, control_plane_node)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let mut last = None;
    for addr in addrs {
        match request(&dialer, addr, Some(token), name).await {
            Ok(enrolled) => {
                enrolled.save(files)?;
                tracing::info!(addr = %addr, "enrolled with a bootstrap token");
                return Ok(Credentials::from_files(files.clone())?);
            }
            // The token or the request is bad: another node would say the same.
            Err(EnrollError::Refused(status))
                if matches!(
                    status.code(),
                    tonic::Code::Unauthenticated
                        | tonic::Code::PermissionDenied
                        | tonic::Code::InvalidArgument
                ) =>
            {
                return Err(EnrollError::Refused(status))
            }
            // This node cannot issue (no CA) or is unavailable: try the next.
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(EnrollError::Connect {
        addr: String::new(),
        message: "no control-plane address".into(),
    }))
}

/// How a proxy or agent reaches the control plane.
pub struct Workload<'a> {
    /// Its certificate, key and bundle; None with `--insecure`.
    pub files: Option<TlsFiles>,
    pub token: Option<&'a str>,
    /// The name a token puts in the certificate (a proxy's node id).
    pub name: &'a str,
    /// Who the certificate must name.
    pub identity: Identity,
    pub control_planes: &'a [String],
    /// The flag that lists the control planes, for errors.
    pub flag: &'a str,
}

/// How often a workload's certificate files are checked for changes, and
/// how long a failed renewal waits before the next try.
const RELOAD: Duration = Duration::from_secs(5);
const RENEWAL_RETRY: Duration = Duration::from_secs(30);

/// The workload's dialer: plaintext to loopback control planes, or mutual
/// TLS with a certificate from disk or enrolled with the token, re-read when
/// its files change and renewed in the background without dropping streams.
/// Also the credentials, for the workload's other TLS uses.
pub async fn workload_dialer(
    workload: Workload<'_>,
) -> Result<(Dialer, Option<Arc<Credentials>>), EnrollError> {
    let Some(files) = workload.files else {
        for addr in workload.control_planes {
            require_loopback(workload.flag, addr)?;
        }
        return Ok((Dialer::insecure(), None));
    };
    let credentials = obtain(
        &files,
        workload.token,
        workload.name,
        workload.control_planes,
    )
    .await?;
    credentials.expect_identity(&workload.identity)?;
    credentials.spawn_reloader(RELOAD);
    let dialer = Dialer::tls(&credentials, control_plane_node)
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    spawn_renewal(
        credentials.clone(),
        dialer.clone(),
        workload.control_planes.to_vec(),
        Some(files),
        RENEWAL_RETRY,
    );
    Ok((dialer, Some(credentials)))
}

/// Renews the certificate at two thirds of its lifetime, for as long as the
/// process runs; on failure retries every `retry` until it succeeds.
fn spawn_renewal(
    credentials: Arc<Credentials>,
    dialer: Dialer,
    addrs: Vec<String>,
    files: Option<TlsFiles>,
    retry: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let due = credentials
                .current()
                .leaf
                .as_ref()
                .map(Leaf::renew_at)
                .unwrap_or_else(SystemTime::now);
            // At least a second between renewals, whatever the lifetime.
            let wait = due
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_secs(1));
            tokio::time::sleep(wait).await;
            let mut renewed = false;
            for addr in &addrs {
                match request(&dialer, addr, None, "").await {
                    Ok(enrolled) => {
                        // In force first: a file that cannot be written must
                        // not cost the workload its renewed certificate.
                        if let Err(error) = enrolled.install(&credentials) {
                            tracing::warn!(%error, "renewal not installed");
                            continue;
                        }
                        if let Some(Err(error)) = files.as_ref().map(|f| enrolled.save(f)) {
                            tracing::warn!(%error, "the renewed certificate is in force but not saved");
                        }
                        tracing::info!(%addr, "renewed the certificate");
                        renewed = true;
                        break;
                    }
                    Err(error) => tracing::warn!(%addr, %error, "renewing the certificate"),
                }
            }
            if !renewed {
                let expired = credentials
                    .current()
                    .leaf
                    .as_ref()
                    .is_some_and(|l| l.not_after <= SystemTime::now());
                if expired {
                    tracing::error!(
                        "the certificate has expired and could not be renewed: \
                         restart with a new bootstrap token"
                    );
                }
                tokio::time::sleep(retry).await;
            }
        }
    })
}
