use super::*;

use futures::FutureExt;
use tokio::io::duplex;

fn render_text(text: &'static str) -> Render {
    Arc::new(move || async move { text.to_string() }.boxed())
}

/// Send `request` through a duplex pipe, return what the responder wrote and its result.
async fn exchange(request: &[u8], limits: Limits) -> (String, Result<(), HttpError>) {
    let (mut client, server) = duplex(64 * 1024);
    let render = render_text("# TYPE up gauge\nup 1\n# EOF\n");
    let task = tokio::spawn(async move { handle_connection(server, &render, &limits).await });
    client.write_all(request).await.unwrap();
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    (String::from_utf8(out).unwrap(), task.await.unwrap())
}

#[tokio::test]
async fn get_metrics_is_answered_with_the_text_and_closed() {
    let (out, r) = exchange(
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
        Limits::default(),
    )
    .await;
    assert_eq!(r, Ok(()));
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
    assert!(
        out.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
        "{out}"
    );
    assert!(out.contains("Content-Length: 27\r\n"), "{out}");
    assert!(out.contains("Connection: close\r\n"), "{out}");
    assert!(
        out.ends_with("\r\n\r\n# TYPE up gauge\nup 1\n# EOF\n"),
        "{out}"
    );
    // A query string (some scrapers add one) and a bare-LF head are fine too.
    let (out, _) = exchange(b"GET /metrics?name[]=up HTTP/1.0\n\n", Limits::default()).await;
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
}

#[tokio::test]
async fn other_paths_methods_and_garbage_are_refused_without_the_metrics() {
    for (req, status) in [
        (&b"GET / HTTP/1.1\r\n\r\n"[..], "404 Not Found"),
        (b"GET /metrics/../etc HTTP/1.1\r\n\r\n", "404 Not Found"),
        (b"GET /metricsx HTTP/1.1\r\n\r\n", "404 Not Found"),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "405 Method Not Allowed",
        ),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", "405 Method Not Allowed"),
        (b"GET /metrics\r\n\r\n", "400 Bad Request"),
        (b"GET /metrics HTTP/2\r\n\r\n", "400 Bad Request"),
        (b"GET  /metrics HTTP/1.1\r\n\r\n", "400 Bad Request"),
        (b"\xff\xfe /metrics HTTP/1.1\r\n\r\n", "400 Bad Request"),
        (b"\r\n\r\n", "400 Bad Request"),
    ] {
        let (out, _) = exchange(req, Limits::default()).await;
        assert!(
            out.starts_with(&format!("HTTP/1.0 {status}\r\n")),
            "{:?} -> {out}",
            String::from_utf8_lossy(req)
        );
        assert!(!out.contains("up 1"), "{out}");
    }
    let (out, _) = exchange(b"DELETE /metrics HTTP/1.1\r\n\r\n", Limits::default()).await;
    assert!(out.contains("Allow: GET\r\n"), "{out}");
}

#[tokio::test]
async fn an_oversized_head_is_refused_after_reading_at_most_the_limit() {
    let limits = Limits {
        max_request_bytes: 256,
        ..Limits::default()
    };
    let (mut client, server) = duplex(1 << 20);
    let render = render_text("up 1\n");
    let task = tokio::spawn(async move { handle_connection(server, &render, &limits).await });
    // Never ends its head: 64 KiB of one header line.
    let mut req = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 64 * 1024));
    client.write_all(&req).await.unwrap();
    assert_eq!(task.await.unwrap(), Err(HttpError::TooLarge(256)));
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.starts_with("HTTP/1.0 431 "), "{out}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_client_is_dropped_at_the_read_timeout() {
    let limits = Limits::default();
    let (mut client, server) = duplex(4096);
    let render = render_text("up 1\n");
    let task = tokio::spawn(async move { handle_connection(server, &render, &limits).await });
    client
        .write_all(b"GET /metrics HTTP/1.1\r\n")
        .await
        .unwrap();
    // The head never ends; paused time jumps to the timeout.
    let started = tokio::time::Instant::now();
    assert_eq!(task.await.unwrap(), Err(HttpError::Timeout));
    assert_eq!(started.elapsed(), limits.read_timeout);
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    assert!(out.is_empty(), "nothing is answered to a slow client");
}

#[tokio::test(start_paused = true)]
async fn a_render_that_hangs_is_answered_503() {
    let limits = Limits::default();
    let (mut client, server) = duplex(4096);
    let render: Render = Arc::new(|| futures::future::pending().boxed());
    let task = tokio::spawn(async move { handle_connection(server, &render, &limits).await });
    client
        .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    assert!(String::from_utf8(out).unwrap().starts_with("HTTP/1.0 503 "));
    task.await.unwrap().unwrap();
}

async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_unanswered_until_a_slot_frees() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        render_text("up 1\n"),
        limits,
        shutdown.clone(),
    ));
    // Two idle connections hold both slots (they send nothing).
    let idle1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let idle2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Give the accept loop time to take both (generous on a loaded machine).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = scrape(addr).await.unwrap_or_default();
    assert_eq!(
        refused, "",
        "a third connection is closed without an answer"
    );
    drop(idle1);
    drop(idle2);
    // Slots come back once the handlers notice the hang-ups.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = scrape(addr).await.unwrap_or_default();
        if out.starts_with("HTTP/1.0 200 OK") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    server.await.unwrap();
}

#[test]
fn only_non_loopback_binds_warn() {
    assert_eq!(exposure_warning("127.0.0.1:9100".parse().unwrap()), None);
    assert_eq!(exposure_warning("[::1]:9100".parse().unwrap()), None);
    let w = exposure_warning("0.0.0.0:9100".parse().unwrap()).unwrap();
    assert!(w.contains("not a loopback address"), "{w}");
    assert!(exposure_warning("192.168.1.5:9100".parse().unwrap()).is_some());
}
