//! Wall-clock timestamps as the API shows them: RFC 3339, UTC, milliseconds.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// A point in time, shown as `2025-10-02T10:30:00.000Z`.
///
/// Always in UTC and between [`Timestamp::EARLIEST`] and
/// [`Timestamp::LATEST`], the range the API's format writes and reads back:
/// every way to make one (parsing, reading a record, adding a duration)
/// keeps it there, so a stored timestamp always decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The earliest timestamp: the Unix epoch.
    pub const EARLIEST: Self = Self(time::macros::datetime!(1970-01-01 00:00:00 UTC));
    /// The latest timestamp: the last millisecond of year 9999.
    pub const LATEST: Self = Self(time::macros::datetime!(9999-12-31 23:59:59.999 UTC));

    /// The current time.
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    /// `moment` in UTC, if it lies in the range; `None` otherwise (also when
    /// converting it to UTC would leave the calendar's range).
    pub fn checked(moment: OffsetDateTime) -> Option<Self> {
        let utc = moment.checked_to_offset(time::UtcOffset::UTC)?;
        (Self::EARLIEST.0..=Self::LATEST.0)
            .contains(&utc)
            .then_some(Self(utc))
    }

    /// Milliseconds since the Unix epoch; used to mint ids such as `plan_…`.
    pub fn unix_millis(&self) -> i128 {
        self.0.unix_timestamp_nanos() / 1_000_000
    }

    /// This moment plus `duration`, at most [`Timestamp::LATEST`].
    pub fn plus(&self, duration: std::time::Duration) -> Self {
        self.0
            .checked_add(time::Duration::try_from(duration).unwrap_or(time::Duration::MAX))
            .and_then(Self::checked)
            .unwrap_or(Self::LATEST)
    }

    /// This moment minus `duration`, at least [`Timestamp::EARLIEST`].
    pub fn minus(&self, duration: std::time::Duration) -> Self {
        self.0
            .checked_sub(time::Duration::try_from(duration).unwrap_or(time::Duration::MAX))
            .and_then(Self::checked)
            .unwrap_or(Self::EARLIEST)
    }

    /// Time from `earlier` until this moment; zero if `earlier` is later.
    pub fn since(&self, earlier: Timestamp) -> std::time::Duration {
        (self.0 - earlier.0).try_into().unwrap_or_default()
    }

    /// Time from now until this moment; zero if it has passed.
    pub fn from_now(&self) -> std::time::Duration {
        let left = self.0 - OffsetDateTime::now_utc();
        left.try_into().unwrap_or_default()
    }

    /// Reads a deadline: an RFC 3339 timestamp, or a date (`2025-10-10`),
    /// which means the end of that day in UTC.
    pub fn parse_deadline(text: &str) -> Result<Self, String> {
        let moment = match OffsetDateTime::parse(text, &Rfc3339) {
            Ok(stamp) => stamp,
            Err(_) => {
                let date = time::Date::parse(text, format_description!("[year]-[month]-[day]"))
                    .map_err(|_| {
                        format!(
                            "{:?} is neither a date (2025-10-10) nor an RFC 3339 timestamp",
                            preview(text)
                        )
                    })?;
                date.with_time(time::macros::time!(23:59:59.999))
                    .assume_utc()
            }
        };
        Self::checked(moment).ok_or_else(|| out_of_range(text))
    }
}

fn out_of_range(text: &str) -> String {
    format!(
        "{:?} is outside the supported range, {} to {}",
        preview(text),
        Timestamp::EARLIEST,
        Timestamp::LATEST
    )
}

/// The start of a long text, for messages.
fn preview(text: &str) -> String {
    text.chars().take(64).collect()
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        // Always UTC and in range (see the type's invariant).
        let text = self.0.format(&format).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        let moment = OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)?;
        Self::checked(moment).ok_or_else(|| serde::de::Error::custom(out_of_range(&text)))
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .examples(["2025-10-02T10:30:00.000Z"])
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

/// Runs `work` to its end, or for at most `limit` after its first poll
/// (`None` then, and `work` is dropped).
///
/// The timer is armed only when the first poll did not finish the work.
/// Most plugin calls and API requests finish in their first poll, and
/// setting a timer up and tearing it down is a noticeable part of a 10 µs
/// call or a small request. Work that can run long in one poll must bound
/// itself (guest code yields at every epoch tick).
pub async fn within_after_first_poll<T>(
    limit: std::time::Duration,
    work: impl Future<Output = T>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(work.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(done) = first {
        return Some(done);
    }
    tokio::time::timeout(limit, work).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn work_is_bounded_from_its_first_poll_and_only_when_it_waits() {
        let limit = std::time::Duration::from_secs(2);
        assert_eq!(within_after_first_poll(limit, async { 7 }).await, Some(7));
        let in_time = async {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            8
        };
        assert_eq!(within_after_first_poll(limit, in_time).await, Some(8));
        let started = tokio::time::Instant::now();
        let never = std::future::pending::<u8>();
        assert_eq!(within_after_first_poll(limit, never).await, None);
        assert_eq!(started.elapsed(), limit);
    }

    #[test]
    fn deadlines_are_dates_or_timestamps() {
        let day = Timestamp::parse_deadline("2025-10-10").unwrap();
        assert_eq!(day.to_string(), "2025-10-10T23:59:59.999Z");
        let stamp = Timestamp::parse_deadline("2025-10-10T08:00:00+09:00").unwrap();
        assert_eq!(stamp.to_string(), "2025-10-09T23:00:00.000Z");
        assert!(Timestamp::parse_deadline("next week").is_err());
    }

    #[test]
    fn out_of_range_deadlines_are_refused_not_panicked_on() {
        // Each of these once panicked, or was stored and then could not be
        // read back, which stopped the host from starting.
        for text in [
            "9999-12-31T23:59:59-00:01",
            "0000-01-01T00:00:00+00:01",
            "1969-12-31T23:59:59Z",
        ] {
            let err = Timestamp::parse_deadline(text).unwrap_err();
            assert!(err.contains("outside the supported range"), "{text}: {err}");
        }
        assert!(Timestamp::parse_deadline("-0001-01-01").is_err());
        let latest = Timestamp::parse_deadline("9999-12-31").unwrap();
        assert_eq!(latest, Timestamp::LATEST);
        let again: Timestamp =
            serde_json::from_value(serde_json::to_value(latest).unwrap()).unwrap();
        assert_eq!(again, latest);
    }

    #[test]
    fn adding_saturates_at_the_latest_moment() {
        let late = Timestamp::LATEST.plus(std::time::Duration::from_secs(u64::MAX));
        assert_eq!(late, Timestamp::LATEST);
        let stored: Result<Timestamp, _> = serde_json::from_str("\"10000-01-01T00:00:00Z\"");
        assert!(stored.is_err());
    }

    #[test]
    fn shows_milliseconds_in_utc_and_reads_back() {
        let stamp: Timestamp = serde_json::from_str("\"2025-10-02T19:30:00.5+09:00\"").unwrap();
        assert_eq!(stamp.to_string(), "2025-10-02T10:30:00.500Z");
        let again: Timestamp =
            serde_json::from_value(serde_json::to_value(stamp).unwrap()).unwrap();
        assert_eq!(again, stamp);
    }
}
