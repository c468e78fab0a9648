//! Wall-clock timestamps as the API shows them: RFC 3339, UTC, milliseconds.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// A point in time, shown as `2025-10-02T10:30:00.000Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    /// Milliseconds since the Unix epoch; used to mint ids such as `plan_…`.
    pub fn unix_millis(&self) -> i128 {
        self.0.unix_timestamp_nanos() / 1_000_000
    }

    /// This moment plus `duration`.
    pub fn plus(&self, duration: std::time::Duration) -> Self {
        Self(self.0 + duration)
    }

    /// Time from now until this moment; zero if it has passed.
    pub fn from_now(&self) -> std::time::Duration {
        let left = self.0 - OffsetDateTime::now_utc();
        left.try_into().unwrap_or_default()
    }

    /// Reads a deadline: an RFC 3339 timestamp, or a date (`2025-10-10`),
    /// which means the end of that day in UTC.
    pub fn parse_deadline(text: &str) -> Result<Self, String> {
        if let Ok(stamp) = OffsetDateTime::parse(text, &Rfc3339) {
            return Ok(Self(stamp));
        }
        let date =
            time::Date::parse(text, format_description!("[year]-[month]-[day]")).map_err(|_| {
                format!("{text:?} is neither a date (2025-10-10) nor an RFC 3339 timestamp")
            })?;
        let end_of_day = time::Time::from_hms_milli(23, 59, 59, 999).expect("a valid time");
        Ok(Self(date.with_time(end_of_day).assume_utc()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let text = self
            .0
            .to_offset(time::UtcOffset::UTC)
            .format(&format)
            .map_err(|_| fmt::Error)?;
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
        let text = String::deserialize(deserializer)?;
        OffsetDateTime::parse(&text, &Rfc3339)
            .map(Self)
            .map_err(serde::de::Error::custom)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_dates_or_timestamps() {
        let day = Timestamp::parse_deadline("2025-10-10").unwrap();
        assert_eq!(day.to_string(), "2025-10-10T23:59:59.999Z");
        let stamp = Timestamp::parse_deadline("2025-10-10T08:00:00+09:00").unwrap();
        assert_eq!(stamp.to_string(), "2025-10-09T23:00:00.000Z");
        assert!(Timestamp::parse_deadline("next week").is_err());
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
