//! The operators' metrics listener shared by trackerd and minitorrd: a tiny, bounded HTTP/1.0
//! responder that answers `GET /metrics` with the Prometheus/OpenMetrics text exposition of a
//! [`prometheus_client`] registry, and nothing else.
//!
//! Why not hyper/axum: neither is in the tree, and one fixed-size answer to one fixed request
//! needs none of HTTP's machinery. What a scraper may cost us is bounded instead:
//!
//! * at most [`Limits::max_connections`] connections at once; excess ones are closed at once
//!   (before a byte is read), so a flood cannot queue memory or tasks;
//! * the request head is read into a buffer of at most [`Limits::max_request_bytes`] and must
//!   arrive within [`Limits::read_timeout`] (slow-loris), the answer must be taken within
//!   [`Limits::write_timeout`];
//! * only `GET /metrics` (an optional query string is ignored) is answered 200; any other path
//!   is 404, any other method 405, anything unparsable 400; every answer closes the connection;
//! * request bodies and headers are never interpreted (nothing reflects client input).
//!
//! The default bind is loopback-only; [`exposure_warning`] is what the daemons log when an
//! operator binds elsewhere (the metrics carry no user or file names, but do reveal activity).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use prometheus_client;

/// `Content-Type` of the answer: prometheus-client writes the OpenMetrics text format, which
/// Prometheus (and anything reading the classic text format's subset) scrapes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The one path served.
pub const PATH: &str = "/metrics";

/// What a scraper may cost (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_request_bytes: usize,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// How long producing the text may take (it may query a database) before 503.
    pub render_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A Prometheus server or two, plus an operator's curl.
            max_connections: 8,
            // A scraper's request head is a few hundred bytes.
            max_request_bytes: 4096,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            render_timeout: Duration::from_secs(5),
        }
    }
}

/// Produces the exposition text for one scrape (refreshing gauges first if it needs to).
pub type Render = Arc<dyn Fn() -> BoxFuture<'static, String> + Send + Sync>;

/// Encode a registry in the text format (`# EOF` included).
pub fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing into a String cannot fail");
    out
}

/// The warning to log when metrics are served on a non-loopback address, else `None`.
pub fn exposure_warning(addr: SocketAddr) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "metrics_listen {addr} is not a loopback address: anyone who can reach it sees this \
         daemon's activity counters (no names, but volumes and timing); restrict it with a \
         firewall or bind 127.0.0.1"
    ))
}

/// Bind `addr` for metrics; the error names the config key.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on metrics_listen {addr}: {e}"),
        )
    })
}

/// Serve scrapes on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    render: Render,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Over the cap: closed unread.
            tracing::debug!("metrics listener: connection cap reached; closing a connection");
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = handle_connection(stream, &render, &limits).await {
                tracing::debug!(error = %e, "metrics connection");
            }
        });
    }
}

/// What one request asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Metrics,
    NotFound,
    MethodNotAllowed,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("malformed request line")]
    Malformed,
    #[error("request head over {0} bytes")]
    TooLarge(usize),
    #[error("request head not received in time")]
    Timeout,
    #[error("connection closed before the request head ended")]
    Closed,
}

/// Classify a request by its first line (`METHOD TARGET HTTP/1.x`).
pub fn parse_request_line(line: &str) -> Result<Target, HttpError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed);
    };
    if !version.starts_with("HTTP/1.") || target.is_empty() || method.is_empty() {
        return Err(HttpError::Malformed);
    }
    if method != "GET" {
        return Ok(Target::MethodNotAllowed);
    }
    let path = target.split('?').next().unwrap_or_default();
    Ok(if path == PATH {
        Target::Metrics
    } else {
        Target::NotFound
    })
}

/// Read up to the end of the request head (a blank line), within the limits.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    limits: &Limits,
) -> Result<Vec<u8>, HttpError> {
    let mut buf = Vec::with_capacity(512);
    let read = async {
        let mut chunk = [0u8; 512];
        loop {
            if let Some(end) = head_end(&buf) {
                buf.truncate(end);
                return Ok(());
            }
            if buf.len() >= limits.max_request_bytes {
                return Err(HttpError::TooLarge(limits.max_request_bytes));
            }
            let room = (limits.max_request_bytes - buf.len()).min(chunk.len());
            match stream.read(&mut chunk[..room]).await {
                Ok(0) | Err(_) => return Err(HttpError::Closed),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    match tokio::time::timeout(limits.read_timeout, read).await {
        Ok(Ok(())) => Ok(buf),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HttpError::Timeout),
    }
}

/// Where the head ends (`\r\n\r\n`, or bare `\n\n` from a hand-typed request).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Answer one connection: read the head, write one response, close.
pub async fn handle_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    render: &Render,
    limits: &Limits,
) -> Result<(), HttpError> {
    let head = read_head(&mut stream, limits).await;
    let target = head.as_ref().map_err(Clone::clone).and_then(|head| {
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = std::str::from_utf8(line).map_err(|_| HttpError::Malformed)?;
        parse_request_line(line.trim_end_matches('\r'))
    });
    let (status, content_type, body, extra) = match &target {
        Ok(Target::Metrics) => match tokio::time::timeout(limits.render_timeout, render()).await {
            Ok(text) => ("200 OK", CONTENT_TYPE, text, ""),
            Err(_) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                "metrics not ready in time\n".to_string(),
                "",
            ),
        },
        Ok(Target::NotFound) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only /metrics is served here\n".to_string(),
            "",
        ),
        Ok(Target::MethodNotAllowed) => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
            "Allow: GET\r\n",
        ),
        Err(HttpError::TooLarge(_)) => (
            "431 Request Header Fields Too Large",
            "text/plain; charset=utf-8",
            "request too large\n".to_string(),
            "",
        ),
        // Nothing useful to say to a peer that sent nothing in time or hung up.
        Err(HttpError::Timeout) | Err(HttpError::Closed) => return head.map(|_| ()),
        Err(HttpError::Malformed) => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_string(),
            "",
        ),
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    // A client that does not read its answer in time is dropped (its error is not ours).
    let _ = tokio::time::timeout(limits.write_timeout, write).await;
    target.map(|_| ())
}

#[cfg(test)]
mod tests;
