//! A mesh CA and certificates for tests, made with the real `meridian certs`
//! commands, plus what the CLI cannot make on purpose: an expired certificate.

use crate::binary;
use meridian_identity::ca_dir::CaDir;
use meridian_identity::tls::{control_plane_node, Credentials, Dialer, TlsFiles};
use meridian_proto::raft_wire;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TRUST_DOMAIN: &str = "mesh.test";

pub struct Pki {
    pub ca_dir: PathBuf,
    root: PathBuf,
}

fn run(args: &[&str]) {
    let output = Command::new(binary("meridian"))
        .args(args)
        .output()
        .expect("run meridian certs");
    assert!(
        output.status.success(),
        "meridian {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Pki {
    /// A new CA in `root/NAME`.
    pub fn new(root: &Path, name: &str) -> Pki {
        let ca_dir = root.join(name);
        run(&[
            "certs",
            "create-ca",
            "--trust-domain",
            TRUST_DOMAIN,
            "--dir",
            &ca_dir.display().to_string(),
        ]);
        Pki {
            ca_dir,
            root: root.to_path_buf(),
        }
    }

    pub fn files(&self) -> CaDir {
        CaDir::new(&self.ca_dir)
    }

    pub fn bundle(&self) -> PathBuf {
        self.files().cert_path()
    }

    /// Issues `who` (e.g. `["--admin", "alice"]`) as `root/FILE.pem` and `.key`.
    pub fn issue(&self, file: &str, who: &[&str]) -> TlsFiles {
        let out = self.root.join(file);
        let mut args = vec![
            "certs".to_string(),
            "issue".into(),
            "--ca-dir".into(),
            self.ca_dir.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        args.extend(who.iter().map(|a| a.to_string()));
        run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        TlsFiles {
            cert: out.with_extension("pem"),
            key: out.with_extension("key"),
            bundle: self.bundle(),
        }
    }

    /// A certificate for `uri` signed by this CA that expired an hour ago.
    pub fn expired(&self, file: &str, uri: &str) -> TlsFiles {
        let ca = self.files().read().expect("CA files");
        let ca_key = rcgen::KeyPair::from_pem(&ca.key).expect("CA key");
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.cert, ca_key).expect("CA");
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().expect("uri"))];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(7200)).into();
        params.not_after = (now - std::time::Duration::from_secs(3600)).into();
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        let out = self.root.join(file);
        std::fs::write(out.with_extension("pem"), cert.pem()).expect("write cert");
        std::fs::write(out.with_extension("key"), key.serialize_pem()).expect("write key");
        TlsFiles {
            cert: out.with_extension("pem"),
            key: out.with_extension("key"),
            bundle: self.bundle(),
        }
    }
}

/// The global flags that make a binary use `files`.
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

/// Runs `meridian` with `files` as its TLS flags against `server`.
pub fn cli_as(
    files: &TlsFiles,
    server: &str,
    command: &[&str],
    stdin: Option<&str>,
) -> crate::CliRun {
    let global = tls_args(files);
    let global: Vec<&str> = global.iter().map(String::as_str).collect();
    crate::cli_with(&global, server, command, stdin)
}

/// Asserts that `status` is `code` and gives `reason` in its message.
pub fn assert_refused(status: &tonic::Status, code: tonic::Code, reason: &str) {
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(status.message().contains(reason), "{}", status.message());
}

/// A dialer presenting `files`' certificate to control-plane nodes.
pub fn dialer(files: &TlsFiles) -> Dialer {
    let credentials = Credentials::from_files(files.clone()).expect("credentials");
    Dialer::tls(&credentials, control_plane_node).expect("dialer")
}

/// A dialer with only the trust bundle: no client certificate.
pub fn anonymous_dialer(bundle: &Path) -> Dialer {
    let pem = std::fs::read_to_string(bundle).expect("bundle");
    let credentials = Credentials::from_pem(&pem, None).expect("credentials");
    Dialer::tls(&credentials, control_plane_node).expect("dialer")
}

/// What node `addr` answers a Raft peer connection from `dialer` that asks
/// for a vote: the reply frame's kind and its body as text (a refusal's
/// reason, or openraft's JSON result).
pub async fn raft_peer_answer(
    dialer: &Dialer,
    addr: &str,
) -> std::io::Result<(raft_wire::Kind, String)> {
    use tokio::io::AsyncWriteExt;
    let mut conn = dialer.stream(addr, raft_wire::ALPN).await?;
    conn.write_all(raft_wire::PREFACE).await?;
    let vote = raft_wire::frame(raft_wire::Kind::Vote, &[b"{}"]).map_err(std::io::Error::other)?;
    // Refused at once may mean the connection is closed before this lands.
    let _ = conn.write_all(&vote).await;
    read_raft_frame(&mut conn).await
}

/// Reads one frame of the Raft peer protocol: its kind, and its body as text.
pub async fn read_raft_frame<R: tokio::io::AsyncRead + Unpin>(
    conn: &mut R,
) -> std::io::Result<(raft_wire::Kind, String)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; raft_wire::HEAD];
    conn.read_exact(&mut head).await?;
    let (kind, len) = raft_wire::parse_head(head).map_err(std::io::Error::other)?;
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    Ok((kind, String::from_utf8_lossy(&body).into_owned()))
}

/// Asserts that node `addr` refuses a Raft peer connection from `dialer`,
/// with `reason` in why.
pub async fn assert_raft_refused(dialer: &Dialer, addr: &str, reason: &str) {
    let (kind, why) = raft_peer_answer(dialer, addr).await.expect("an answer");
    assert_eq!(kind, raft_wire::Kind::Refused, "{why}");
    assert!(why.contains(reason), "{why}");
}
