//! TLS on the daemon↔tracker link.
//!
//! With `tls_cert` and `tls_key` set, every connection is TLS first; the Minitorr handshake
//! preamble and all frames run inside it, so passwords and session tokens never cross the network
//! in clear. Without them the link is plain TCP, which is allowed only on a loopback listen
//! address or when `allow_plaintext = true` says so explicitly (both with a warning).
//!
//! Daemons trust the tracker either through a CA file or by pinning the SHA-256 fingerprint of
//! the tracker's certificate (`trackerd --print-cert-fingerprint` prints it).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {msg}")]
    Cert { path: String, msg: String },
    #[error("cannot read the TLS key {path}: {msg}")]
    Key { path: String, msg: String },
    #[error("TLS certificate {cert} and key {key} do not go together: {msg}")]
    Config {
        cert: String,
        key: String,
        msg: String,
    },
    #[error(
        "refusing to serve the tracker link unencrypted on {listen}, which is not a loopback \
         address: set tls_cert and tls_key (TLS), or allow_plaintext = true to accept that \
         passwords and tokens cross the network in clear"
    )]
    PlaintextRefused { listen: SocketAddr },
}

/// Read a PEM certificate chain (leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |msg: String| TlsError::Cert {
        path: path.display().to_string(),
        msg,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

/// Read a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.display().to_string(),
        msg: e.to_string(),
    })
}

/// SHA-256 of a DER certificate, lowercase hex (what daemons pin as `tracker_cert_sha256`).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// Fingerprint of the leaf (first) certificate of a PEM file.
pub fn fingerprint_file(path: &Path) -> Result<String, TlsError> {
    Ok(fingerprint(&load_certs(path)?[0]))
}

/// The TLS acceptor for a certificate chain and key (rustls' safe defaults: TLS 1.2 and 1.3).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key_der))
        .map_err(|e| TlsError::Config {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            msg: e.to_string(),
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Whether plain TCP may be served on `listen`: `Ok(warning)` (always worth logging) or the
/// refusal to start.
pub fn plaintext_allowed(listen: SocketAddr, allow_plaintext: bool) -> Result<String, TlsError> {
    if listen.ip().is_loopback() {
        Ok(format!(
            "tracker link is not encrypted (plain TCP on loopback address {listen}); \
             set tls_cert and tls_key before listening on a network address"
        ))
    } else if allow_plaintext {
        Ok(format!(
            "tracker link is not encrypted: allow_plaintext = true on {listen}; passwords and \
             session tokens cross the network in clear"
        ))
    } else {
        Err(TlsError::PlaintextRefused { listen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.key_pair.serialize_pem()).unwrap();
        (c, k, ck.cert.der().to_vec())
    }

    #[test]
    fn fingerprint_is_sha256_of_the_der_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k, der) = self_signed(dir.path());
        let fp = fingerprint_file(&c).unwrap();
        assert_eq!(fp, hex::encode(Sha256::digest(&der)));
        assert_eq!(fp.len(), 64);
        acceptor(&c, &k).unwrap();
    }

    fn acceptor_err(cert: &Path, key: &Path) -> String {
        match acceptor(cert, key) {
            Ok(_) => panic!("{} with {} accepted", cert.display(), key.display()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unreadable_or_mismatched_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k, _) = self_signed(dir.path());
        let missing = dir.path().join("nope.pem");
        let e = acceptor_err(&missing, &k);
        assert!(
            e.contains("cannot read the TLS certificate") && e.contains("nope.pem"),
            "{e}"
        );
        let e = acceptor_err(&c, &missing);
        assert!(e.contains("cannot read the TLS key"), "{e}");
        // A key file that holds a certificate only.
        let e = acceptor_err(&c, &c);
        assert!(e.contains("TLS key"), "{e}");
        // A key of another certificate.
        let other = tempfile::tempdir().unwrap();
        let (_, k2, _) = self_signed(other.path());
        let e = acceptor_err(&c, &k2);
        assert!(e.contains("do not go together"), "{e}");
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        let e = fingerprint_file(&dir.path().join("empty.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no CERTIFICATE"), "{e}");
    }

    #[test]
    fn plaintext_only_on_loopback_or_when_allowed() {
        let lo: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let lo6: SocketAddr = "[::1]:5000".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        let lan: SocketAddr = "192.168.1.2:5000".parse().unwrap();
        assert!(plaintext_allowed(lo, false)
            .unwrap()
            .contains("tracker link is not encrypted"));
        assert!(plaintext_allowed(lo6, false).is_ok());
        for a in [any, lan] {
            let e = plaintext_allowed(a, false).unwrap_err().to_string();
            assert!(e.contains("refusing") && e.contains("tls_cert"), "{e}");
            assert!(plaintext_allowed(a, true)
                .unwrap()
                .contains("tracker link is not encrypted"));
        }
    }
}
