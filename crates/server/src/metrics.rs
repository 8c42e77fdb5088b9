//! Process metrics in the Prometheus text exposition format: request counts by route and status,
//! request latency histogram, and gauges supplied by the adapters (JWKS fetches).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Request metrics shared by every connection.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl Metrics {
    /// Records one answered request. `route` is the route's template, never the raw path, so
    /// ids do not explode the label space.
    pub fn record(&self, route: &'static str, status: u16, elapsed: Duration) {
        if let Ok(mut map) = self.requests.lock() {
            *map.entry((route, status)).or_default() += 1;
        }
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros.fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The exposition text, with `extra` counters appended (name, help, value).
    pub fn render(&self, extra: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP custody_http_requests_total HTTP requests answered, by route and status.\n");
        out.push_str("# TYPE custody_http_requests_total counter\n");
        if let Ok(map) = self.requests.lock() {
            for ((route, status), count) in map.iter() {
                let _ = writeln!(out, "custody_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}");
            }
        }
        out.push_str("# HELP custody_http_request_duration_seconds Time to answer a request.\n");
        out.push_str("# TYPE custody_http_request_duration_seconds histogram\n");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "custody_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                self.latency_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "custody_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "custody_http_request_duration_seconds_sum {}",
            self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "custody_http_request_duration_seconds_count {count}");
        for (name, help, value) in extra {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_histogram() {
        let m = Metrics::default();
        m.record("/v1/me", 200, Duration::from_millis(2));
        m.record("/v1/me", 200, Duration::from_millis(30));
        m.record("/v1/me", 401, Duration::from_micros(100));
        let text = m.render(&[("custody_jwks_fetches_total", "JWKS fetches.", 3)]);
        assert!(text.contains("custody_http_requests_total{route=\"/v1/me\",status=\"200\"} 2"));
        assert!(text.contains("custody_http_requests_total{route=\"/v1/me\",status=\"401\"} 1"));
        assert!(text.contains("custody_http_request_duration_seconds_bucket{le=\"0.0025\"} 2"));
        assert!(text.contains("custody_http_request_duration_seconds_count 3"));
        assert!(text.contains("custody_jwks_fetches_total 3"));
    }
}
