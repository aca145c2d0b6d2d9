//! RFC 3339 timestamps in the UTC `Z` form the intake parses
//! (`YYYY-MM-DDTHH:MM:SS.fffffffffZ`), with hand-written calendar math
//! (days from civil and back) instead of a date library.
//!
//! Fraction rule, for every timestamp written: 1 to 9 fraction digits are kept
//! as given; none becomes `.000000000`; more than 9 are cut to 9.

use std::time::{SystemTime, UNIX_EPOCH};

use shared::calendar::{civil_from_days, days_from_civil};

/// Length of a stamp with nine fraction digits: `2024-11-18T08:59:45.123456789Z`.
pub const STAMP_LEN: usize = 30;

/// A UTC timestamp with nine fraction digits, e.g. the time a line was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp([u8; STAMP_LEN]);

impl Stamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// `t` in UTC (times before 1970 or after 9999 are clamped to the epoch).
    pub fn from_system_time(t: SystemTime) -> Self {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs() as i64;
        let days = secs.div_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let (year, month, day, secs) = if year > 9999 {
            (1970, 1, 1, 0)
        } else {
            (year, month, day, secs)
        };
        let rem = secs.rem_euclid(86_400);
        let mut b = [0u8; STAMP_LEN];
        write_fields(
            &mut b,
            year,
            month,
            day,
            (rem / 3600) as u32,
            (rem / 60 % 60) as u32,
            (rem % 60) as u32,
        );
        b[19] = b'.';
        let mut nanos = since.subsec_nanos();
        for i in (20..29).rev() {
            b[i] = b'0' + (nanos % 10) as u8;
            nanos /= 10;
        }
        b[29] = b'Z';
        Self(b)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Calendar fields of the first 19 bytes, `YYYY-MM-DDTHH:MM:SS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

/// True when `ts` is already in the output form (UTC `Z`, 1 to 9 fraction
/// digits, valid date and time) and can be copied as is.
#[inline]
pub fn is_canonical_utc(ts: &[u8]) -> bool {
    let n = ts.len();
    (22..=30).contains(&n)
        && ts[n - 1] == b'Z'
        && ts[19] == b'.'
        && ts[20..n - 1].iter().all(u8::is_ascii_digit)
        && ts[10] == b'T'
        && parse_date_time(ts).is_some()
}

/// Appends `ts` (RFC 3339: `Z`, `z` or a `±HH:MM` offset) converted to UTC in
/// the output form. Returns false, leaving `out` untouched, when `ts` is not
/// a valid RFC 3339 timestamp or falls outside years 0000-9999 in UTC.
pub fn write_utc(ts: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(dt) = parse_date_time(ts) else {
        return false;
    };
    let mut i = 19;
    let mut frac: &[u8] = &[];
    if ts.get(i) == Some(&b'.') {
        let start = i + 1;
        let digits = ts[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            return false;
        }
        frac = &ts[start..start + digits.min(9)];
        i = start + digits;
    }
    let offset_secs: i64 = match ts.get(i) {
        Some(b'Z' | b'z') if ts.len() == i + 1 => 0,
        Some(&sign @ (b'+' | b'-')) if ts.len() == i + 6 && ts[i + 3] == b':' => {
            let (Some(h), Some(m)) = (digits2(ts, i + 1), digits2(ts, i + 4)) else {
                return false;
            };
            if h > 23 || m > 59 {
                return false;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if sign == b'+' { secs } else { -secs }
        }
        _ => return false,
    };
    let local = days_from_civil(dt.year, dt.month, dt.day) * 86_400
        + i64::from(dt.hour * 3600 + dt.minute * 60 + dt.second);
    let utc = local - offset_secs;
    let (year, month, day) = civil_from_days(utc.div_euclid(86_400));
    if !(0..=9999).contains(&year) {
        return false;
    }
    let rem = utc.rem_euclid(86_400);
    let mut b = [0u8; 19];
    write_fields(
        &mut b,
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    );
    out.extend_from_slice(&b);
    out.push(b'.');
    if frac.is_empty() {
        out.extend_from_slice(b"000000000");
    } else {
        out.extend_from_slice(frac);
    }
    out.push(b'Z');
    true
}

/// Appends `ts` in the output form: copied when already canonical, converted
/// otherwise. False (nothing appended) when it is not a timestamp.
#[inline]
pub fn write_normalized(ts: &[u8], out: &mut Vec<u8>) -> bool {
    if is_canonical_utc(ts) {
        out.extend_from_slice(ts);
        true
    } else {
        write_utc(ts, out)
    }
}

#[inline]
fn digits2(b: &[u8], i: usize) -> Option<u32> {
    let (d0, d1) = (
        b.get(i)?.wrapping_sub(b'0'),
        b.get(i + 1)?.wrapping_sub(b'0'),
    );
    (d0 < 10 && d1 < 10).then(|| u32::from(d0) * 10 + u32::from(d1))
}

#[inline]
fn parse_date_time(ts: &[u8]) -> Option<DateTime> {
    if ts.len() < 19
        || ts[4] != b'-'
        || ts[7] != b'-'
        || !(ts[10] == b'T' || ts[10] == b't')
        || ts[13] != b':'
        || ts[16] != b':'
    {
        return None;
    }
    let year = i64::from(digits2(ts, 0)? * 100 + digits2(ts, 2)?);
    let dt = DateTime {
        year,
        month: digits2(ts, 5)?,
        day: digits2(ts, 8)?,
        hour: digits2(ts, 11)?,
        minute: digits2(ts, 14)?,
        second: digits2(ts, 17)?,
    };
    let valid = (1..=12).contains(&dt.month)
        && dt.day >= 1
        && dt.day <= days_in_month(dt.year, dt.month)
        && dt.hour < 24
        && dt.minute < 60
        && dt.second <= 60; // 60: a leap second
    valid.then_some(dt)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

fn write_fields(
    b: &mut [u8],
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
) {
    let year = year as u32;
    let put2 = |b: &mut [u8], i: usize, v: u32| {
        b[i] = b'0' + (v / 10) as u8;
        b[i + 1] = b'0' + (v % 10) as u8;
    };
    put2(b, 0, year / 100);
    put2(b, 2, year % 100);
    b[4] = b'-';
    put2(b, 5, month);
    b[7] = b'-';
    put2(b, 8, day);
    b[10] = b'T';
    put2(b, 11, hour);
    b[13] = b':';
    put2(b, 14, minute);
    b[16] = b':';
    put2(b, 17, second);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn utc(ts: &str) -> Option<String> {
        let mut out = Vec::new();
        write_utc(ts.as_bytes(), &mut out).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn z_timestamp_with_fraction_is_canonical_and_kept_as_given() {
        assert!(is_canonical_utc(b"2024-11-18T08:59:45.123456789Z"));
        assert!(is_canonical_utc(b"2024-11-18T08:59:45.1Z"));
        assert_eq!(
            utc("2024-11-18T08:59:45.12Z").unwrap(),
            "2024-11-18T08:59:45.12Z"
        );
    }

    #[test]
    fn offset_with_z_converted_to_utc_keeps_nanos() {
        assert_eq!(
            utc("2024-11-18T10:59:45.123456789+02:00").unwrap(),
            "2024-11-18T08:59:45.123456789Z"
        );
        assert_eq!(
            utc("2024-11-18T01:30:00.5-05:30").unwrap(),
            "2024-11-18T07:00:00.5Z"
        );
    }

    #[test]
    fn offset_crossing_midnight_month_year_and_leap_day() {
        assert_eq!(
            utc("2025-01-01T01:00:00.000000001+02:00").unwrap(),
            "2024-12-31T23:00:00.000000001Z"
        );
        assert_eq!(
            utc("2024-02-28T23:30:00.0-01:00").unwrap(),
            "2024-02-29T00:30:00.0Z"
        );
        assert_eq!(
            utc("2023-02-28T23:30:00.0-01:00").unwrap(),
            "2023-03-01T00:30:00.0Z"
        );
    }

    #[test]
    fn missing_or_long_fraction_becomes_nine_digits() {
        assert_eq!(
            utc("2024-11-18T08:59:45Z").unwrap(),
            "2024-11-18T08:59:45.000000000Z"
        );
        assert_eq!(
            utc("2024-11-18T08:59:45.1234567891234z").unwrap(),
            "2024-11-18T08:59:45.123456789Z"
        );
        assert!(!is_canonical_utc(b"2024-11-18T08:59:45Z"));
    }

    #[test]
    fn invalid_timestamps_are_rejected() {
        for ts in [
            "2024-13-18T08:59:45.1Z",
            "2024-02-30T08:59:45.1Z",
            "2023-02-29T08:59:45.1Z",
            "2024-11-18T24:00:00.1Z",
            "2024-11-18 08:59:45.1Z",
            "2024-11-18T08:59:45.Z",
            "2024-11-18T08:59:45.1",
            "2024-11-18T08:59:45.1+0200",
            "2024-11-18T08:59:45.1+24:00",
            "2024-11-18T08:59:45.1Zx",
            "0000-01-01T00:00:00.1+01:00",
            "hello",
        ] {
            assert_eq!(utc(ts), None, "{ts}");
            assert!(!is_canonical_utc(ts.as_bytes()), "{ts}");
        }
    }

    #[test]
    fn stamp_of_system_time_has_nine_digits() {
        let t = UNIX_EPOCH + Duration::new(1_731_920_385, 123_456_789);
        assert_eq!(
            Stamp::from_system_time(t).as_bytes(),
            b"2024-11-18T08:59:45.123456789Z"
        );
        assert!(is_canonical_utc(Stamp::now().as_bytes()));
    }
}
