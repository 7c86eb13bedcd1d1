//! TLS 1.3 on peer links, both ends authenticated by their device keys.
//!
//! Why raw public keys (RFC 7250) and not self-signed X.509 certificates: the only identity a
//! peer has is its Ed25519 device key, which the tracker lists. A certificate would wrap that
//! key in names, validity dates and extensions that nobody checks — more parser surface on a
//! port open to the network, a certificate generator (rcgen) in the daemon, and nothing gained.
//! With raw public keys the handshake carries just the SubjectPublicKeyInfo, and each side
//! checks exactly what matters:
//!
//! * the seeder (TLS server) accepts any client that proves possession of an Ed25519 key
//!   (rustls checks the CertificateVerify signature through [`AnyDeviceKey`]) and learns that
//!   key; it then admits the client's ticket only if the ticket is bound to that same key;
//! * the downloader (TLS client) accepts the seeder only if its key is the device key the
//!   tracker listed for that holder ([`PinnedDeviceKey`]). No CA, no host names.
//!
//! TLS 1.3 only (rustls supports raw public keys only there), no resumption (every connection
//! proves key possession afresh), AES-128-GCM preferred (AES-NI makes it the cheapest AEAD on
//! the machines we run on; ChaCha20-Poly1305 stays as the fallback for CPUs without AES).

use std::sync::Arc;

use ed25519_dalek::pkcs8::DecodePublicKey;
use ed25519_dalek::VerifyingKey;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::AlwaysResolvesClientRawPublicKeys;
use rustls::crypto::{verify_tls13_signature_with_raw_key, CryptoProvider};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, ServerName, SubjectPublicKeyInfoDer, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::AlwaysResolvesServerRawPublicKeys;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::TcpStream;

use super::identity::DeviceKey;

/// The error a downloader reports when a holder's TLS key is not the one the tracker listed.
pub const IMPOSTOR: &str =
    "peer's device key does not match the key the tracker listed for this holder";

/// A peer link TLS stream, either side.
pub type TlsStream = tokio_rustls::TlsStream<TcpStream>;

/// The TLS side of this daemon's peer links: built once from the device key at startup.
pub struct PeerTls {
    provider: Arc<CryptoProvider>,
    certified: Arc<CertifiedKey>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

/// ring, TLS 1.3 suites only, AES-128-GCM first.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
        ],
        ..default_provider()
    })
}

/// The 32-byte Ed25519 key inside a SubjectPublicKeyInfo, or why it is not one.
pub fn ed25519_from_spki(spki: &[u8]) -> Result<[u8; 32], rustls::Error> {
    VerifyingKey::from_public_key_der(spki)
        .map(|k| k.to_bytes())
        .map_err(|_| rustls::Error::General("peer's key is not an Ed25519 device key".into()))
}

impl PeerTls {
    pub fn new(device: &DeviceKey) -> Result<PeerTls, rustls::Error> {
        let provider = provider();
        let signing = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(device.pkcs8_der().into()))?;
        let certified = Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(device.spki_der())],
            signing,
        ));
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(AnyDeviceKey {
                provider: provider.clone(),
            }))
            .with_cert_resolver(Arc::new(AlwaysResolvesServerRawPublicKeys::new(
                certified.clone(),
            )));
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        Ok(PeerTls {
            provider,
            certified,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        })
    }

    /// Seeder side: run the handshake; returns the stream and the client's device key.
    pub async fn accept(&self, tcp: TcpStream) -> std::io::Result<(TlsStream, [u8; 32])> {
        let tls = self.acceptor.accept(tcp).await?;
        let key = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| ed25519_from_spki(c.as_ref()))
            .transpose()
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other("peer presented no device key"))?;
        Ok((tokio_rustls::TlsStream::Server(tls), key))
    }

    /// Downloader side: run the handshake, accepting the server only if it proves possession
    /// of `expected` (the holder's device key as the tracker listed it).
    pub async fn connect(&self, tcp: TcpStream, expected: [u8; 32]) -> std::io::Result<TlsStream> {
        let mut client = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedDeviceKey {
                expected,
                provider: self.provider.clone(),
            }))
            .with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(
                self.certified.clone(),
            )));
        client.resumption = rustls::client::Resumption::disabled();
        client.enable_sni = false;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        // Never sent (SNI is off) and never checked: the pinned key is the identity.
        let name = ServerName::try_from("minitorr-peer").expect("valid name");
        let tls = connector.connect(name, tcp).await?;
        Ok(tokio_rustls::TlsStream::Client(tls))
    }
}

/// Check a TLS 1.3 CertificateVerify signature made with a raw Ed25519 public key.
fn verify_ed25519(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(cert.as_ref()),
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// Never reached: both configs enable TLS 1.3 only.
fn tls12_refused() -> rustls::Error {
    rustls::Error::General("TLS 1.2 is not used on peer links".into())
}

/// Seeder: any client holding an Ed25519 key. Which key may do what is decided afterwards by
/// the ticket, which names the key it is bound to.
#[derive(Debug)]
struct AnyDeviceKey {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyDeviceKey {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General("peer sent more than one key".into()));
        }
        ed25519_from_spki(end_entity.as_ref())?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_ed25519(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// Downloader: only the holder's listed device key.
#[derive(Debug)]
struct PinnedDeviceKey {
    expected: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedDeviceKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General("peer sent more than one key".into()));
        }
        if ed25519_from_spki(end_entity.as_ref())? != self.expected {
            return Err(rustls::Error::General(IMPOSTOR.into()));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_ed25519(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// A readable reason for a failed peer-link TLS handshake.
pub fn describe(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::General(msg)) => msg.clone(),
        Some(rustls::Error::InvalidMessage(_)) => "the peer did not answer with TLS (a plaintext \
             peer link, insecure_plaintext_peer_links_for_benchmarks?): refused"
            .into(),
        Some(other) => format!("TLS handshake with the peer failed: {other}"),
        None => format!("TLS handshake with the peer failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.unwrap(), s.unwrap().0)
    }

    #[tokio::test]
    async fn both_sides_learn_and_check_device_keys() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (seeder, downloader) = (DeviceKey::generate(), DeviceKey::generate());
        let (st, dt) = (
            PeerTls::new(&seeder).unwrap(),
            PeerTls::new(&downloader).unwrap(),
        );
        let (c, s) = pair().await;
        let (client, server) = tokio::join!(dt.connect(c, seeder.public_bytes()), st.accept(s));
        let (mut client, (mut server, learned)) = (client.unwrap(), server.unwrap());
        assert_eq!(learned, downloader.public_bytes());
        let cipher = client
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .unwrap()
            .suite();
        assert_eq!(cipher, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        client.write_all(b"hello").await.unwrap();
        client.flush().await.unwrap();
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[tokio::test]
    async fn a_holder_with_another_key_is_refused() {
        let (seeder, downloader, listed) = (
            DeviceKey::generate(),
            DeviceKey::generate(),
            DeviceKey::generate(),
        );
        let (st, dt) = (
            PeerTls::new(&seeder).unwrap(),
            PeerTls::new(&downloader).unwrap(),
        );
        let (c, s) = pair().await;
        let (client, _server) = tokio::join!(dt.connect(c, listed.public_bytes()), st.accept(s));
        let e = client.unwrap_err();
        assert_eq!(describe(&e), IMPOSTOR);
    }
}
