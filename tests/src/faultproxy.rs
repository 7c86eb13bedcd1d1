//! A TCP proxy the test can turn bad, to take a server (PostgreSQL) away from a process in the
//! two ways that differ for the client:
//!
//! * [`Mode::Blackhole`]: a hung network. Open connections stop carrying bytes (nothing is read
//!   or written, so the peer's sends fill the window and stall), new connections are accepted
//!   but never reach the server. The client sees no error, only silence: what a dropped route
//!   or a frozen server looks like, the case that hung tracker requests for 30–45 s.
//! * [`Mode::Refuse`]: a stopped server. Every open connection is closed, new ones are closed
//!   at once.
//!
//! [`Mode::Forward`] brings it back: held bytes flow again, new connections reach the server.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Forward,
    Blackhole,
    Refuse,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    _rt: tokio::runtime::Runtime,
}

impl FaultProxy {
    /// Listen on 127.0.0.1 (a free port), forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let (mode, rx) = watch::channel(Mode::Forward);
        rt.spawn(accept_loop(listener, upstream, rx));
        FaultProxy {
            addr,
            mode,
            _rt: rt,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *mode.borrow() == Mode::Refuse {
            drop(client);
            continue;
        }
        tokio::spawn(connection(client, upstream, mode.clone()));
    }
}

/// Waits while blackholed; false when the proxy refuses (the connection must close).
async fn may_pass(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Blackhole).await {
        Ok(m) => *m == Mode::Forward,
        Err(_) => false,
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // A blackholed proxy accepts, then never connects.
    if !may_pass(&mut mode).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // Either direction ending (EOF, error, Refuse) closes both.
    tokio::select! {
        _ = pump(cr, sw, mode.clone()) => {}
        _ = pump(sr, cw, mode) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Nothing is read while blackholed: the sender's window fills up, as on a dead route.
        if !may_pass(&mut mode).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        if !may_pass(&mut mode).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
