//! The tracker's operators' metrics (served by `minitorr_metrics` when `metrics_listen` is
//! set). Recorded by [`crate::service::Service::handle`], the one place every request passes;
//! the gauges are counted from the database at scrape time.
//!
//! Labels are only ever `&'static str` from fixed lists (the call kind, the error code, the
//! login method), never a user, group or file name, so the number of series is bounded
//! whatever clients send.

use std::sync::Arc;
use std::time::Duration;

use minitorr_proto::tracker::{ErrorCode, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::store::{Store, Totals};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    method: &'static str,
    outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … about 16 s: heartbeats take well under a millisecond, logins (argon2) tens of
    // milliseconds, a database that is down answers in about 2 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The tracker's registry and its metrics.
pub struct TrackerMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<KindLabel, Histogram, fn() -> Histogram>,
    logins: Family<LoginLabels, Counter>,
    users: Gauge,
    sessions_online: Gauge,
    groups: Gauge,
    files: Gauge,
}

impl Default for TrackerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl TrackerMetrics {
    pub fn new() -> TrackerMetrics {
        let mut registry = Registry::with_prefix("minitorr_tracker");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by call kind and outcome (ok or the error code)",
            requests.clone(),
        );
        let latency = Family::<KindLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register_with_unit(
            "request_duration",
            "Time to answer a request, by call kind",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let logins = Family::<LoginLabels, Counter>::default();
        registry.register(
            "logins",
            "Login attempts, by method (password or device key) and outcome",
            logins.clone(),
        );
        let users = Gauge::default();
        registry.register("users", "User accounts", users.clone());
        let sessions_online = Gauge::default();
        registry.register(
            "sessions_online",
            "Sessions heard from within peer_timeout_secs (daemons online)",
            sessions_online.clone(),
        );
        let groups = Gauge::default();
        registry.register("groups", "Groups", groups.clone());
        let files = Gauge::default();
        registry.register("files", "File entries in all groups", files.clone());
        TrackerMetrics {
            registry,
            requests,
            latency,
            logins,
            users,
            sessions_online,
            groups,
            files,
        }
    }

    /// One answered request of `kind` (a fixed call name) that took `elapsed`.
    pub fn record(&self, kind: &'static str, response: &Response, elapsed: Duration) {
        let outcome = outcome(response);
        self.requests
            .get_or_create(&RequestLabels { kind, outcome })
            .inc();
        self.latency
            .get_or_create(&KindLabel { kind })
            .observe(elapsed.as_secs_f64());
        let method = match kind {
            "login" => Some("password"),
            "device_login" => Some("device"),
            _ => None,
        };
        if let Some(method) = method {
            self.logins
                .get_or_create(&LoginLabels { method, outcome })
                .inc();
        }
    }

    /// Count what the database holds into the gauges.
    pub async fn refresh(
        &self,
        store: &Store,
        online_since: i64,
    ) -> Result<(), crate::store::StoreError> {
        let Totals {
            users,
            sessions_online,
            groups,
            files,
        } = store.totals(online_since).await?;
        self.users.set(users);
        self.sessions_online.set(sessions_online);
        self.groups.set(groups);
        self.files.set(files);
        Ok(())
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        minitorr_metrics::encode(&self.registry)
    }
}

/// Render function for the metrics listener: gauges refreshed, then encoded. A database that
/// is down leaves the gauges at their last values (its requests show as
/// `database_unavailable`).
pub fn render(service: Arc<crate::service::Service>) -> minitorr_metrics::Render {
    use futures::FutureExt;
    Arc::new(move || {
        let service = service.clone();
        async move {
            if let Err(e) = service.refresh_metrics().await {
                tracing::warn!(error = %e, "metrics: cannot count from the database");
            }
            service.metrics().encode()
        }
        .boxed()
    })
}

fn outcome(r: &Response) -> &'static str {
    match r {
        Response::Error { code, .. } => match code {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::InvalidSession => "invalid_session",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::Internal => "internal",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
        },
        _ => "ok",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_logins_and_latency_are_counted_with_fixed_labels() {
        let m = TrackerMetrics::new();
        m.record("login", &Response::ok("x"), Duration::from_millis(30));
        m.record(
            "login",
            &Response::err(ErrorCode::AuthFailed, "bad alice"),
            Duration::from_millis(30),
        );
        m.record("device_login", &Response::ok(""), Duration::from_millis(2));
        m.record("heartbeat", &Response::ok(""), Duration::from_micros(300));
        let text = m.encode();
        for line in [
            "minitorr_tracker_requests_total{kind=\"login\",outcome=\"ok\"} 1",
            "minitorr_tracker_requests_total{kind=\"login\",outcome=\"auth_failed\"} 1",
            "minitorr_tracker_logins_total{method=\"password\",outcome=\"auth_failed\"} 1",
            "minitorr_tracker_logins_total{method=\"device\",outcome=\"ok\"} 1",
            "minitorr_tracker_request_duration_seconds_count{kind=\"login\"} 2",
            "minitorr_tracker_request_duration_seconds_bucket{le=\"0.001\",kind=\"heartbeat\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // Messages (which may carry names) never become labels.
        assert!(!text.contains("alice"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
