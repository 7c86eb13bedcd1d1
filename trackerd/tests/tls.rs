//! TLS on the tracker link: the server in-process with a self-signed certificate, real rustls
//! clients, and plaintext clients that must be turned away promptly instead of hanging.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use minitorr_proto::tracker::{Call, Request, Response};
use minitorr_proto::{handshake, links, Link};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use trackerd::auth::PasswordHasher;
use trackerd::server::{serve_with_tls, ServerOptions};
use trackerd::service::{system_clock, Service, Timing};
use trackerd::store::{default_database_url, Store};

struct Running {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let acceptor = trackerd::tls::acceptor(&cert, &key).unwrap();

    let store = Store::open(&default_database_url(dir.path()), 4)
        .await
        .unwrap();
    let svc = Arc::new(
        Service::new(
            store,
            Timing::default(),
            PasswordHasher::insecure_fast(),
            system_clock(),
        )
        .await
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let opts = ServerOptions {
        max_connections: 16,
        handshake_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(30),
        drain_timeout: Duration::from_secs(2),
        ..ServerOptions::default()
    };
    tokio::spawn(serve_with_tls(
        listener,
        svc,
        opts,
        Some(acceptor),
        stop.clone(),
    ));
    Running {
        addr,
        cert: ck.cert.der().clone(),
        stop,
        _dir: dir,
    }
}

fn connector(trusted: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn a_tls_client_is_served_inside_tls() {
    let srv = start().await;
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let name = ServerName::IpAddress(srv.addr.ip().into());
    let mut tls = connector(&srv.cert).connect(name, tcp).await.unwrap();
    handshake(&mut tls, Link::Tracker).await.unwrap();
    let mut c = Framed::new(tls, links::tracker_client());
    c.send(Request {
        token: None,
        call: Call::CreateUser {
            user: "alice".into(),
            password: "pw".into(),
        },
    })
    .await
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(r, Response::Ok { .. }), "{r:?}");
}

#[tokio::test]
async fn a_plaintext_client_is_closed_not_left_hanging() {
    let srv = start().await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    // The Minitorr preamble is not a TLS ClientHello: the server hangs up at once.
    let r = tokio::time::timeout(Duration::from_secs(5), handshake(&mut s, Link::Tracker)).await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");

    // Saying nothing at all: closed after the handshake timeout.
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_fails_the_handshake() {
    let srv = start().await;
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let name = ServerName::IpAddress(srv.addr.ip().into());
    let e = connector(other.cert.der())
        .connect(name, tcp)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("certificate"), "{e}");
}
