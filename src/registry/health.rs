//! The health decision: a pure function of what a component last said and when, so that the
//! rules can be read in one place and tested with a table and an injected clock.

use std::time::{Duration, Instant};

pub use flowctl_proto::flowctl::v1::HealthStatus;

/// What the registry knows about a component's liveness at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// The last sign of life: the latest heartbeat, or the registration before the first one.
    pub last_seen: Instant,
    /// The latest status the component itself reported. `Unknown` means it never said: a
    /// heartbeat without a status (every `flowctl.ControlPlane` heartbeat, or a v1 heartbeat
    /// with `HEALTH_STATUS_UNKNOWN`) leaves the previous report in place.
    pub reported: HealthStatus,
}

/// The status a component has at `now`.
///
/// - Silent for longer than `ttl` → `Unhealthy`, whatever it said before: a component that
///   stopped heartbeating cannot vouch for itself.
/// - Otherwise a status the component reported (`Starting`, `Degraded`, `Unhealthy`,
///   `Stopping`) stands; the registry never masks it.
/// - Otherwise (it reported `Healthy`, or nothing) it is `Healthy`: it is alive and says
///   nothing is wrong.
///
/// Recovery needs no special case: the next heartbeat moves `last_seen` to now.
pub fn decide(liveness: Liveness, now: Instant, ttl: Duration) -> HealthStatus {
    if now.saturating_duration_since(liveness.last_seen) > ttl {
        return HealthStatus::Unhealthy;
    }
    match liveness.reported {
        HealthStatus::Unknown | HealthStatus::Healthy => HealthStatus::Healthy,
        reported => reported,
    }
}

/// `flowctl.ControlPlane` only has a boolean: a degraded component still serves, so it counts
/// as healthy there (the v1 API and `flowctl list` show the difference).
pub fn is_healthy(status: HealthStatus) -> bool {
    matches!(status, HealthStatus::Healthy | HealthStatus::Degraded)
}

/// The status a v1 heartbeat leaves behind: a real report replaces the previous one, an
/// `Unknown` keeps it.
pub fn merge_reported(previous: HealthStatus, heartbeat: HealthStatus) -> HealthStatus {
    match heartbeat {
        HealthStatus::Unknown => previous,
        status => status,
    }
}

/// Lower-case names used in tables and JSON.
pub fn status_name(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Unknown => "unknown",
        HealthStatus::Starting => "starting",
        HealthStatus::Healthy => "healthy",
        HealthStatus::Degraded => "degraded",
        HealthStatus::Unhealthy => "unhealthy",
        HealthStatus::Stopping => "stopping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::*;

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn decide_table() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // (reported, seconds since last seen, expected)
        let rows = [
            (Unknown, 0, Healthy),
            (Unknown, 30, Healthy),
            (Unknown, 31, Unhealthy),
            (Healthy, 10, Healthy),
            (Healthy, 31, Unhealthy),
            (Degraded, 10, Degraded),
            (Degraded, 31, Unhealthy),
            (Unhealthy, 0, Unhealthy),
            (Starting, 5, Starting),
            (Stopping, 5, Stopping),
            (Stopping, 100, Unhealthy),
        ];
        for (reported, age, expected) in rows {
            let liveness = Liveness {
                last_seen: t0,
                reported,
            };
            assert_eq!(
                decide(liveness, t0 + s(age), TTL),
                expected,
                "reported {reported:?}, silent for {age}s"
            );
        }
    }

    #[test]
    fn next_heartbeat_after_expiry_recovers() {
        let t0 = Instant::now();
        let stale = Liveness {
            last_seen: t0,
            reported: Unknown,
        };
        let later = t0 + Duration::from_secs(60);
        assert_eq!(decide(stale, later, TTL), Unhealthy);
        let fresh = Liveness {
            last_seen: later,
            reported: merge_reported(stale.reported, Unknown),
        };
        assert_eq!(decide(fresh, later, TTL), Healthy);
    }

    #[test]
    fn unknown_heartbeat_keeps_reported_status() {
        assert_eq!(merge_reported(Degraded, Unknown), Degraded);
        assert_eq!(merge_reported(Unhealthy, Unknown), Unhealthy);
        assert_eq!(merge_reported(Degraded, Healthy), Healthy);
        assert_eq!(merge_reported(Healthy, Degraded), Degraded);
    }

    #[test]
    fn a_clock_going_backwards_is_not_expiry() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let liveness = Liveness {
            last_seen: t0,
            reported: Unknown,
        };
        assert_eq!(decide(liveness, t0 - Duration::from_secs(5), TTL), Healthy);
    }

    #[test]
    fn degraded_counts_as_healthy_on_the_boolean_api() {
        assert!(is_healthy(Healthy));
        assert!(is_healthy(Degraded));
        assert!(!is_healthy(Unhealthy));
        assert!(!is_healthy(Starting));
    }
}
