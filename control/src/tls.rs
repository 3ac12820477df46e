//! TLS for the control's API and the agents' stream (rustls, ring).
//!
//! Without `--tls-cert/--tls-key` the control keeps its own CA in the data
//! directory, made at first start:
//! `tls/ca.pem` (public: give it to agents and clients), `tls/ca.key` (0600),
//! `tls/server.pem` and `tls/server.key` (0600), the server certificate
//! signed by that CA for `localhost`, 127.0.0.1, ::1, the listen and
//! advertised addresses and any `--tls-san`. A server certificate lacking a
//! name now needed is reissued from the same CA at start; the CA stays.
//! Keys are ECDSA P-256.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS: {0}")]
    Config(String),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The files of the control's own CA in `data_dir`.
pub struct CaFiles {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    sans_record: PathBuf,
}

impl CaFiles {
    pub fn in_dir(data_dir: &Path) -> CaFiles {
        let d = data_dir.join("tls");
        CaFiles {
            ca_cert: d.join("ca.pem"),
            ca_key: d.join("ca.key"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            sans_record: d.join("server-names.json"),
        }
    }
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Garrison control CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// The names a server certificate must carry: loopback, the given
/// addresses (unspecified ones skipped) and extra names, sorted, unique.
pub fn server_names(addrs: &[std::net::IpAddr], extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend(
        addrs
            .iter()
            .filter(|a| !a.is_unspecified())
            .map(|a| a.to_string()),
    );
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// Makes (first start) or loads the CA, and (re)issues the server
/// certificate when it lacks one of `names`. Returns the files.
pub fn ensure_own_ca(data_dir: &Path, names: &[String]) -> Result<CaFiles, TlsError> {
    let f = CaFiles::in_dir(data_dir);
    let ca_key = if f.ca_key.exists() && f.ca_cert.exists() {
        let pem = std::fs::read_to_string(&f.ca_key).map_err(|e| file_err(&f.ca_key, e))?;
        KeyPair::from_pem(&pem).map_err(|e| file_err(&f.ca_key, e))?
    } else {
        let key = KeyPair::generate().map_err(|e| TlsError::Config(e.to_string()))?;
        let cert = ca_params()
            .self_signed(&key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        crate::files::write_private(&f.ca_key, key.serialize_pem().as_bytes())
            .map_err(|e| file_err(&f.ca_key, e))?;
        crate::files::write_public(&f.ca_cert, cert.pem().as_bytes())
            .map_err(|e| file_err(&f.ca_cert, e))?;
        tracing::info!(ca = %f.ca_cert.display(), "generated the control's CA; agents and clients verify the control with it");
        // A new CA invalidates any older server certificate.
        let _ = std::fs::remove_file(&f.sans_record);
        key
    };
    let recorded: Vec<String> = std::fs::read(&f.sans_record)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let covered = names.iter().all(|n| recorded.contains(n));
    if !(covered && f.server_cert.exists() && f.server_key.exists()) {
        let ca = ca_params()
            .self_signed(&ca_key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut all = recorded;
        all.extend(names.iter().cloned());
        all.sort();
        all.dedup();
        let mut params =
            CertificateParams::new(all.clone()).map_err(|e| TlsError::Config(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "garrison-control");
        params.distinguished_name = dn;
        let key = KeyPair::generate().map_err(|e| TlsError::Config(e.to_string()))?;
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        crate::files::write_private(&f.server_key, key.serialize_pem().as_bytes())
            .map_err(|e| file_err(&f.server_key, e))?;
        crate::files::write_public(&f.server_cert, cert.pem().as_bytes())
            .map_err(|e| file_err(&f.server_cert, e))?;
        crate::files::write_public(
            &f.sans_record,
            serde_json::to_string(&all)
                .expect("serialisable")
                .as_bytes(),
        )
        .map_err(|e| file_err(&f.sans_record, e))?;
        tracing::info!(names = ?all, cert = %f.server_cert.display(), "issued the control's server certificate");
    }
    Ok(f)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from a certificate chain and key in PEM files
/// (HTTP/1.1 only: the agents' stream is a WebSocket upgrade).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e))?;
    if certs.is_empty() {
        return Err(file_err(cert, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting only the CA certificates in `ca_pem`.
pub fn client_config(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| TlsError::Config(format!("CA bundle: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(format!("CA bundle: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Config("CA bundle: no certificate".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_ca_issues_a_server_certificate_and_reissues_for_new_names() {
        let dir = std::env::temp_dir().join(format!("garrison-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let names = server_names(&["10.0.0.1".parse().unwrap()], &[]);
        assert!(
            names.contains(&"10.0.0.1".to_string()) && names.contains(&"localhost".to_string())
        );
        let f = ensure_own_ca(&dir, &names).unwrap();
        let ca = std::fs::read(&f.ca_cert).unwrap();
        let server = std::fs::read(&f.server_cert).unwrap();
        server_config(&f.server_cert, &f.server_key).unwrap();
        client_config(&ca).unwrap();
        // Same names: nothing changes.
        ensure_own_ca(&dir, &names).unwrap();
        assert_eq!(std::fs::read(&f.server_cert).unwrap(), server);
        // A new address: a new server certificate, the same CA.
        let more = server_names(&["10.0.0.2".parse().unwrap()], &["ctl.example".into()]);
        ensure_own_ca(&dir, &more).unwrap();
        assert_ne!(std::fs::read(&f.server_cert).unwrap(), server);
        assert_eq!(std::fs::read(&f.ca_cert).unwrap(), ca);
        assert!(client_config(b"no pem here").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
