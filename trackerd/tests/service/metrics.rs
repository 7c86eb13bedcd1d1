//! The operators' metrics as the service records them (SQLite, and PostgreSQL in the
//! `service_postgres` run): gauges counted from the database, counters by kind and outcome.

use minitorr_proto::tracker::{Call, ErrorCode};

use super::*;

/// The value of the sample line starting with `series ` (exactly that series).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn gauges_count_the_database_and_counters_move_by_kind_and_outcome() {
    let h = Harness::new().await;
    let alice = h.user("alice").await;
    let bob = h.user("bob").await;
    h.group("g1", &alice, &[]).await;
    h.ok(&alice, share("g1", meta("a.iso", 100, 1), true)).await;
    h.err(
        &bob,
        Call::ListFiles { group: "g1".into() },
        ErrorCode::Forbidden,
    )
    .await;
    // bob goes quiet: after the peer timeout only alice is online.
    h.advance(Timing::default().peer_timeout_secs + 1);
    h.ok(&alice, Call::Heartbeat).await;

    h.svc.refresh_metrics().await.unwrap();
    let text = h.svc.metrics().encode();
    for (series, want) in [
        ("minitorr_tracker_users", 2.0),
        ("minitorr_tracker_groups", 1.0),
        ("minitorr_tracker_files", 1.0),
        ("minitorr_tracker_sessions_online", 1.0),
        (
            "minitorr_tracker_requests_total{kind=\"share\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "minitorr_tracker_requests_total{kind=\"list_files\",outcome=\"forbidden\"}",
            1.0,
        ),
        (
            "minitorr_tracker_logins_total{method=\"password\",outcome=\"ok\"}",
            2.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(!text.contains("alice") && !text.contains("a.iso"), "{text}");
}
