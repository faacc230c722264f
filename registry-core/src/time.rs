//! Time as the registry records it: UTC instants with microsecond precision.
//!
//! Recorded times live in log entries as `google.protobuf.Timestamp`; people see RFC 3339.
//! Microseconds are enough to keep recorded times strictly increasing at any realistic append
//! rate, and they survive a round trip through every format we print.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};

/// An instant in UTC.
pub type Time = DateTime<Utc>;

/// A timestamp could not be turned into a [`Time`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// The timestamp is outside the representable range or has invalid nanoseconds.
    #[error("timestamp is out of range (seconds {seconds}, nanos {nanos})")]
    OutOfRange {
        /// Seconds since the Unix epoch.
        seconds: i64,
        /// Nanoseconds.
        nanos: i32,
    },
    /// An RFC 3339 string did not parse.
    #[error("not an RFC 3339 time: {0:?}")]
    BadText(String),
}

/// Converts to the protobuf well-known type.
pub fn to_timestamp(t: &Time) -> registry_proto::Timestamp {
    registry_proto::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// Converts from the protobuf well-known type, refusing out-of-range values.
pub fn from_timestamp(ts: &registry_proto::Timestamp) -> Result<Time, TimeError> {
    let err = || TimeError::OutOfRange { seconds: ts.seconds, nanos: ts.nanos };
    let nanos = u32::try_from(ts.nanos).map_err(|_| err())?;
    if nanos >= 1_000_000_000 {
        return Err(err());
    }
    DateTime::from_timestamp(ts.seconds, nanos).ok_or_else(err)
}

/// Cuts a time down to whole microseconds, the precision of recorded times.
pub fn truncate_micros(t: Time) -> Time {
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(t)
}

/// One microsecond, the smallest step between two recorded times.
pub const MICROSECOND: TimeDelta = TimeDelta::microseconds(1);

/// Formats as RFC 3339 in UTC (`2026-11-21T19:50:27.123456Z`, fractional digits only when
/// needed).
pub fn format(t: &Time) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses RFC 3339 with any offset and returns it in UTC.
pub fn parse(s: &str) -> Result<Time, TimeError> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| TimeError::BadText(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_survives_the_protobuf_round_trip() {
        let t = parse("2026-11-21T19:50:27.123456+01:00").unwrap();
        assert_eq!(from_timestamp(&to_timestamp(&t)).unwrap(), t);
        assert_eq!(format(&t), "2026-11-21T18:50:27.123456Z");
    }

    #[test]
    fn negative_or_oversized_nanos_are_refused() {
        assert!(from_timestamp(&registry_proto::Timestamp { seconds: 0, nanos: -1 }).is_err());
        assert!(
            from_timestamp(&registry_proto::Timestamp { seconds: 0, nanos: 1_000_000_000 })
                .is_err()
        );
    }
}
