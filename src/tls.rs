//! TLS material: a development CA and a localhost certificate made on first
//! run, or the operator's own certificate and key. See `certs/README.md`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// Where the certificate and key the server presents live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The development CA that signed `cert`, when we made it (clients may trust this file).
    pub ca: Option<PathBuf>,
}

/// Names the generated certificate is valid for.
fn dev_names(extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// Uses `dir/{cert,key}.pem` if they exist, otherwise makes a development CA
/// (`dir/ca.pem`) and a certificate signed by it for localhost and `extra_names`.
pub fn ensure_dev_certificate(dir: &Path, extra_names: &[String]) -> anyhow::Result<TlsFiles> {
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca: Some(dir.join("ca.pem")),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Gatehouse development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params = CertificateParams::new(dev_names(extra_names))?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "Gatehouse (development)");
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;

    write_private(&files.key, leaf_key.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, leaf.pem() + &ca_cert.pem())?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    tracing::info!(cert = %files.cert.display(), ca = %dir.join("ca.pem").display(), "generated a development TLS certificate");
    Ok(files)
}

/// Writes a secret file readable only by its owner.
pub fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    // Written beside, synced, then renamed over: a process killed mid-write (or a
    // power cut) leaves either no file or the whole one, never a short key that
    // would keep the gateway from starting.
    let tmp = path.with_extension("partial");
    let mut f = opts.open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    if let Some(dir) = path.parent() {
        // The rename itself is durable only once the directory is.
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Installs the process-wide rustls crypto provider (ring); harmless if already set.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let dir = std::env::temp_dir().join(format!("gatehouse-tls-{}", crate::ids::random_code(10)));
        let a = ensure_dev_certificate(&dir, &["gate.example".into()]).unwrap();
        let first = std::fs::read(&a.cert).unwrap();
        let b = ensure_dev_certificate(&dir, &[]).unwrap();
        assert_eq!(
            std::fs::read(&b.cert).unwrap(),
            first,
            "second start reuses the certificate"
        );
        let pem = String::from_utf8(first).unwrap();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "leaf followed by its CA");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_private_file_is_replaced_whole_and_readable_only_by_its_owner() {
        let dir = std::env::temp_dir().join(format!("gatehouse-tls-{}", crate::ids::random_code(10)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("signing.key");
        write_private(&path, b"first secret, the longer one").unwrap();
        write_private(&path, b"second").unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"second",
            "replaced, not overwritten in place"
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("signing.key")],
            "no partial file left beside it"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
