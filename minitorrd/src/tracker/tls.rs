//! TLS for the tracker link (client side).
//!
//! The daemon trusts its trackers through `tracker_ca` (a PEM file of CA certificates, or the
//! tracker's own self-signed certificate; checked the usual way, including that the certificate
//! names the tracker's IP address) and/or `tracker_cert_sha256` (the SHA-256 fingerprint of the
//! tracker's certificate, as `trackerd --print-cert-fingerprint` prints it; several may be given
//! for several trackers). With both, both must hold. The Minitorr handshake and every frame
//! then run inside TLS, so passwords and session tokens never cross the network in clear.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The message of a pin mismatch (tests and users look for it).
pub const PIN_MISMATCH: &str = "tracker certificate does not match the pinned fingerprint";

/// A ready TLS client for the tracker link.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

/// Parse `tracker_cert_sha256`: one or more SHA-256 fingerprints (64 hex digits, colons allowed,
/// any case), separated by commas or whitespace.
pub fn parse_pins(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut pins = Vec::new();
    for item in text.split(|c: char| c == ',' || c.is_whitespace()) {
        if item.is_empty() {
            continue;
        }
        let digits: String = item.chars().filter(|&c| c != ':').collect();
        let bytes = hex::decode(&digits)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                format!(
                    "tracker_cert_sha256: '{item}' is not a SHA-256 fingerprint (64 hex digits, \
                 as printed by `trackerd --print-cert-fingerprint`)"
                )
            })?;
        pins.push(bytes.try_into().expect("32 bytes"));
    }
    if pins.is_empty() {
        return Err("tracker_cert_sha256 is empty".into());
    }
    Ok(pins)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsClient {
    /// Build the client from a CA file and/or pinned fingerprints (at least one of them).
    pub fn new(ca: Option<&Path>, pins: Option<&str>) -> Result<TlsClient, String> {
        let provider = provider();
        let webpki = match ca {
            None => None,
            Some(path) => {
                let shown = path.display();
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("tracker_ca {shown}: {e}"))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("tracker_ca {shown}: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("tracker_ca {shown}: unusable certificate: {e}"))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "tracker_ca {shown}: no CERTIFICATE block in the file"
                    ));
                }
                let v =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("tracker_ca {shown}: {e}"))?;
                Some(v)
            }
        };
        let pins = pins.map(parse_pins).transpose()?.unwrap_or_default();
        if webpki.is_none() && pins.is_empty() {
            return Err(
                "TLS to the tracker needs tracker_ca (CA or the tracker's certificate, PEM) or \
                 tracker_cert_sha256 (the pinned fingerprint of its certificate)"
                    .into(),
            );
        }
        let verifier = Arc::new(TrackerCertVerifier {
            webpki,
            pins,
            provider: provider.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// TLS handshake over a connected socket to the tracker at `addr`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = ServerName::IpAddress(addr.ip().into());
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| describe(&e))
    }
}

/// A readable reason for a failed TLS handshake with the tracker.
fn describe(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::General(msg)) => msg.clone(),
        Some(rustls::Error::InvalidCertificate(c)) => {
            format!("tracker certificate not trusted (tracker_ca): {c}")
        }
        Some(other) => format!("TLS handshake with the tracker failed: {other}"),
        None => format!(
            "TLS handshake with the tracker failed: {e} (does the tracker have tls_cert set?)"
        ),
    }
}

/// Accepts the tracker's certificate when it matches a pinned fingerprint (if any are set) and
/// chains to `tracker_ca` for the tracker's address (if set). Handshake signatures are always
/// checked against the certificate's key.
#[derive(Debug)]
pub struct TrackerCertVerifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    pins: Vec<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

/// Compare without an early exit (fingerprints are not secret, but it costs nothing).
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ServerCertVerifier for TrackerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.pins.is_empty() {
            let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            if !self.pins.iter().any(|p| same(p, &got)) {
                return Err(rustls::Error::General(format!(
                    "{PIN_MISMATCH} (tracker_cert_sha256); the tracker presented {}",
                    hex::encode(got)
                )));
            }
        }
        if let Some(w) = &self.webpki {
            w.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    struct Cert {
        pem: String,
        der: CertificateDer<'static>,
        key_pem: String,
    }

    fn self_signed(names: &[&str]) -> Cert {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        Cert {
            pem: ck.cert.pem(),
            der: ck.cert.der().clone(),
            key_pem: ck.key_pair.serialize_pem(),
        }
    }

    fn fp(c: &Cert) -> String {
        hex::encode(Sha256::digest(c.der.as_ref()))
    }

    /// A TLS server on 127.0.0.1 presenting `cert`; answers one byte after the handshake.
    async fn server(cert: &Cert) -> SocketAddr {
        use rustls::pki_types::PrivateKeyDer;
        let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der.clone()], key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    if let Ok(mut t) = acceptor.accept(s).await {
                        let _ = t.write_all(b"!").await;
                        let _ = t.flush().await;
                    }
                });
            }
        });
        addr
    }

    async fn try_connect(client: &TlsClient, addr: SocketAddr) -> Result<(), String> {
        use tokio::io::AsyncReadExt;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut t = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.connect(addr, tcp),
        )
        .await
        .expect("no hang")?;
        let mut b = [0u8; 1];
        t.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn pins_parse_in_the_usual_spellings() {
        let h = "AB".repeat(32);
        let colons = vec!["ab"; 32].join(":");
        let pins = parse_pins(&format!("{h}, {colons}\n{}", h.to_lowercase())).unwrap();
        assert_eq!(pins.len(), 3);
        assert!(pins.iter().all(|p| *p == [0xab; 32]));
        for bad in ["", "abcd", &"zz".repeat(32), &"ab".repeat(33)] {
            assert!(parse_pins(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_needs_a_ca_or_a_pin() {
        let e = TlsClient::new(None, None).unwrap_err();
        assert!(
            e.contains("tracker_ca") && e.contains("tracker_cert_sha256"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let e = TlsClient::new(Some(&dir.path().join("none.pem")), None).unwrap_err();
        assert!(e.contains("none.pem"), "{e}");
        let empty = write(dir.path(), "empty.pem", "");
        let e = TlsClient::new(Some(&empty), None).unwrap_err();
        assert!(e.contains("no CERTIFICATE"), "{e}");
    }

    #[tokio::test]
    async fn the_pinned_certificate_is_accepted_and_another_is_not() {
        let cert = self_signed(&["tracker.example"]);
        let addr = server(&cert).await;
        // The pin alone decides: the name in the certificate does not matter.
        let ok = TlsClient::new(None, Some(&fp(&cert))).unwrap();
        try_connect(&ok, addr).await.unwrap();
        let other = self_signed(&["127.0.0.1"]);
        let several = TlsClient::new(None, Some(&format!("{},{}", fp(&other), fp(&cert)))).unwrap();
        try_connect(&several, addr).await.unwrap();

        let wrong = TlsClient::new(None, Some(&fp(&other))).unwrap();
        let e = try_connect(&wrong, addr).await.unwrap_err();
        assert!(e.contains(PIN_MISMATCH), "{e}");
        assert!(
            e.contains(&fp(&cert)),
            "names what the tracker presented: {e}"
        );
    }

    #[tokio::test]
    async fn a_ca_file_trusts_a_self_signed_tracker_certificate_for_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let cert = self_signed(&["127.0.0.1"]);
        let addr = server(&cert).await;
        let ca = write(dir.path(), "ca.pem", &cert.pem);
        try_connect(&TlsClient::new(Some(&ca), None).unwrap(), addr)
            .await
            .unwrap();
        // CA and pin together: both must hold.
        try_connect(&TlsClient::new(Some(&ca), Some(&fp(&cert))).unwrap(), addr)
            .await
            .unwrap();
        let other = self_signed(&["127.0.0.1"]);
        let e = try_connect(&TlsClient::new(Some(&ca), Some(&fp(&other))).unwrap(), addr)
            .await
            .unwrap_err();
        assert!(e.contains(PIN_MISMATCH), "{e}");

        // Another CA: not trusted.
        let other_ca = write(dir.path(), "other.pem", &other.pem);
        let e = try_connect(&TlsClient::new(Some(&other_ca), None).unwrap(), addr)
            .await
            .unwrap_err();
        assert!(e.contains("not trusted"), "{e}");

        // Right certificate, wrong address in it.
        let named = self_signed(&["10.9.8.7"]);
        let addr2 = server(&named).await;
        let ca2 = write(dir.path(), "named.pem", &named.pem);
        let e = try_connect(&TlsClient::new(Some(&ca2), None).unwrap(), addr2)
            .await
            .unwrap_err();
        assert!(e.contains("not trusted") && e.contains("10.9.8.7"), "{e}");
    }

    #[tokio::test]
    async fn a_plaintext_tracker_is_a_clear_error_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            // Like a plaintext trackerd: send its preamble, then hang up on what it gets.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.write_all(b"MINITORR-not-tls").await;
            let mut b = [0u8; 64];
            let _ = s.read(&mut b).await;
        });
        let cert = self_signed(&["127.0.0.1"]);
        let client = TlsClient::new(None, Some(&fp(&cert))).unwrap();
        let e = try_connect(&client, addr).await.unwrap_err();
        assert!(e.contains("TLS handshake with the tracker failed"), "{e}");
    }
}
