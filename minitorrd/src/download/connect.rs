//! Reaching a holder (issue #14): the ways of [`super::path::PathPolicy::plan`], each started
//! when the previous one failed or after [`STAGGER`], first connection wins.

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use minitorr_proto::control::PeerPath;
use minitorr_proto::tracker::{Call, Response};
use minitorr_proto::types::PeerInfo;
use tokio::net::TcpStream;

use super::path::{Abilities, Way};
use super::{Download, DownloadEnv};
use crate::punch;

/// A direct attempt that has not connected by then is raced by the next way (a NAT that drops
/// our SYN gives no answer at all; a reachable holder across an ocean answers within ~300 ms).
pub const STAGGER: Duration = Duration::from_millis(700);
/// How a direct attempt that was actively refused starts its error.
const REFUSED: &str = "connection refused";
/// The direct attempt's own limit.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(3);

type Attempt = BoxFuture<'static, (Way, Result<TcpStream, String>)>;

/// A TCP connection to `info`'s holder by the most direct way that works, and which way it was.
pub async fn connect(
    dl: &Download,
    info: &PeerInfo,
    env: &DownloadEnv,
) -> Result<(TcpStream, PeerPath), String> {
    let can = Abilities {
        punch: env.punch.is_some(),
        relay: env.relay.is_ok(),
    };
    let plan = dl.paths.lock().expect("lock").plan(&info.addr, can);
    let mut next = plan.into_iter();
    let mut running: FuturesUnordered<Attempt> = FuturesUnordered::new();
    let mut errors: Vec<String> = vec![];
    let start = |way: Way| -> Option<Attempt> { attempt(way, dl, info, env) };
    if let Some(a) = next.by_ref().find_map(start) {
        running.push(a);
    }
    loop {
        let stagger = tokio::time::sleep(STAGGER);
        tokio::pin!(stagger);
        tokio::select! {
            r = running.next() => match r {
                Some((way, Ok(stream))) => {
                    dl.paths.lock().expect("lock").record(&info.addr, way, true);
                    return Ok((stream, path_of(way)));
                }
                Some((way, Err(e))) => {
                    dl.paths.lock().expect("lock").record(&info.addr, way, false);
                    errors.push(format!("{}: {e}", name(way)));
                    // The holder's host answered that nobody listens there (a daemon that
                    // stopped; NATs drop rather than refuse): nothing to punch.
                    if way == Way::Direct && e.starts_with(REFUSED) && running.is_empty() {
                        break;
                    }
                    if let Some(a) = next.by_ref().find_map(start) {
                        running.push(a);
                    } else if running.is_empty() {
                        break;
                    }
                }
                None => break,
            },
            _ = &mut stagger => {
                if let Some(a) = next.by_ref().find_map(start) {
                    running.push(a);
                }
            }
        }
    }
    // Without a relay, say why there is none (e.g. "the tracker offers no relay (its
    // relay_listen is off)").
    let relay = match &env.relay {
        Ok(_) => String::new(),
        Err(why) => format!("; {why}"),
    };
    Err(format!(
        "cannot reach {} ({}){relay}",
        info.addr,
        errors.join("; ")
    ))
}

fn path_of(way: Way) -> PeerPath {
    match way {
        Way::Direct => PeerPath::Direct,
        Way::Punch => PeerPath::Punched,
        Way::Relay => PeerPath::Relayed,
    }
}

fn name(way: Way) -> &'static str {
    match way {
        Way::Direct => "direct",
        Way::Punch => "hole punch",
        Way::Relay => "relay",
    }
}

/// One way's attempt as a future of its own (`None`: this way cannot be tried here).
fn attempt(way: Way, dl: &Download, info: &PeerInfo, env: &DownloadEnv) -> Option<Attempt> {
    let addr = info.addr.clone();
    match way {
        Way::Direct => Some(Box::pin(async move {
            let r = match tokio::time::timeout(DIRECT_TIMEOUT, TcpStream::connect(&addr)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    Err(format!("{REFUSED}: nobody listens on {addr}"))
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("connect timed out".into()),
            };
            (Way::Direct, r)
        })),
        Way::Punch => {
            let hub = env.punch.clone()?;
            let remote: SocketAddr = addr.parse().ok()?;
            let (tracker, token, listen) = (env.tracker.clone(), env.token.clone(), env.listen);
            let (group, file) = (dl.group.clone(), dl.meta.name.clone());
            Some(Box::pin(async move {
                let r = punch_to(hub, tracker, token, listen, remote, group, file).await;
                (Way::Punch, r)
            }))
        }
        Way::Relay => {
            let relay = env.relay.as_ref().ok()?.clone();
            let (key, addr) = (info.device_key, info.addr.clone());
            Some(Box::pin(async move {
                let r = relay.dial(key).await.map_err(|e| e.to_string());
                if r.is_ok() {
                    tracing::info!(peer = %addr, relay = %relay.addr, "connected via the relay");
                }
                (Way::Relay, r)
            }))
        }
    }
}

/// Ask the tracker to have the holder connect to us, and connect to it from our peer port at
/// the same time; its connection may also land on our listener (see `crate::punch`).
async fn punch_to(
    hub: std::sync::Arc<punch::PunchHub>,
    tracker: std::sync::Arc<crate::tracker::TrackerLink>,
    token: String,
    listen: SocketAddr,
    remote: SocketAddr,
    group: String,
    file: String,
) -> Result<TcpStream, String> {
    let nonce: [u8; 16] = rand::random();
    let landed = hub
        .waiters
        .register(nonce)
        .ok_or("too many hole punches at once")?;
    struct Forget<'a>(&'a punch::PunchWaiters, [u8; 16]);
    impl Drop for Forget<'_> {
        fn drop(&mut self) {
            self.0.forget(&self.1);
        }
    }
    let _forget = Forget(&hub.waiters, nonce);
    let call = Call::Punch {
        group,
        file,
        peer: remote.to_string(),
        nonce,
    };
    match tracker.call(Some(&token), call).await {
        Ok(Response::Ok { .. }) => {}
        Ok(Response::Error { message, .. }) => return Err(format!("tracker: {message}")),
        Ok(other) => return Err(format!("tracker answered {other:?}")),
        Err(e) => return Err(format!("tracker: {e}")),
    }
    let mut stream = tokio::select! {
        r = punch::simultaneous_open(listen, remote, punch::PUNCH_WINDOW) => r?,
        Ok(s) = landed => return Ok(s), // checked by the listener already
    };
    punch::expect_preamble(&mut stream, &nonce).await?;
    Ok(stream)
}
