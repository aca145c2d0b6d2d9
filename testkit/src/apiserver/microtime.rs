//! `metav1.MicroTime` as the real server reads and writes it: read with Go's
//! `time.Parse(RFC3339Micro, s)`, written back in UTC with six fractional
//! digits. A port of what Go's parser does for this one layout, quirks and
//! error messages included.

use serde_json::{Value, json};

use super::meta;

/// `metav1.RFC3339Micro`.
const LAYOUT: &str = "2006-01-02T15:04:05.000000Z07:00";

/// The time `value` names, as the real server stores and serves it
/// (`"2026-12-06T10:00:00.123456Z"`; `null` for Go's zero time, which
/// MicroTime writes so), or the text of Go's `*time.ParseError`.
///
/// What Go accepts here: four-digit year, two-digit month, day, minute and
/// second, a one- or two-digit hour, exactly six fractional digits after a
/// `.` or `,`, and `Z` or a `±hh:mm` offset (converted to UTC). No fraction,
/// nine digits, `z`, a missing zone or a trailing character are errors.
pub(crate) fn normalize(value: &str) -> Result<Value, String> {
    let t = parse(value.as_bytes()).map_err(|e| e.message(value))?;
    let days = days_from_civil(t.year, t.month, t.day);
    let secs = days * 86_400 + i64::from(t.hour * 3600 + t.min * 60 + t.sec) - t.offset;
    let (y, m, d) = meta::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    if (y, m, d, rem, t.micros) == (1, 1, 1, 0, 0) {
        return Ok(Value::Null);
    }
    Ok(json!(format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        t.micros
    )))
}

struct Parsed {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    micros: u32,
    /// Seconds east of UTC.
    offset: i64,
}

/// A parse failure, as Go's `time.ParseError` words it.
enum ParseError {
    /// `cannot parse <value_elem> as <layout_elem>`
    Element {
        layout_elem: &'static str,
        value_elem: Vec<u8>,
    },
    /// `: <what> out of range`, `: extra text: ...`
    Message(String),
}

impl ParseError {
    fn message(&self, value: &str) -> String {
        match self {
            ParseError::Element {
                layout_elem,
                value_elem,
            } => format!(
                "parsing time {} as {}: cannot parse {} as {}",
                quote(value.as_bytes()),
                quote(LAYOUT.as_bytes()),
                quote(value_elem),
                quote(layout_elem.as_bytes())
            ),
            ParseError::Message(m) => format!("parsing time {}{m}", quote(value.as_bytes())),
        }
    }
}

fn element(layout_elem: &'static str, value_elem: &[u8]) -> ParseError {
    ParseError::Element {
        layout_elem,
        value_elem: value_elem.to_vec(),
    }
}

fn out_of_range(what: &str) -> ParseError {
    ParseError::Message(format!(": {what} out of range"))
}

/// Go's `time.Parse` for [`LAYOUT`], chunk by chunk: `2006` `-` `01` `-`
/// `02` `T` `15` `:` `04` `:` `05` `.000000` `Z07:00`.
fn parse(value: &[u8]) -> Result<Parsed, ParseError> {
    let mut v = value;
    // 2006
    if v.len() < 4 || !is_digit(v, 0) {
        return Err(element("2006", v));
    }
    let year = atoi(&v[..4]).ok_or_else(|| element("2006", v))?;
    v = &v[4..];
    v = skip(v, b'-', "-")?;
    // 01
    let (month, rest) = getnum(v, true).ok_or_else(|| element("01", v))?;
    if !(1..=12).contains(&month) {
        return Err(out_of_range("month"));
    }
    v = skip(rest, b'-', "-")?;
    // 02: any two digits here; checked against the month at the end.
    let (day, rest) = getnum(v, true).ok_or_else(|| element("02", v))?;
    v = skip(rest, b'T', "T")?;
    // 15: one or two digits.
    let (hour, rest) = getnum(v, false).ok_or_else(|| element("15", v))?;
    if hour >= 24 {
        return Err(out_of_range("hour"));
    }
    v = skip(rest, b':', ":")?;
    // 04
    let (min, rest) = getnum(v, true).ok_or_else(|| element("04", v))?;
    if min >= 60 {
        return Err(out_of_range("minute"));
    }
    v = skip(rest, b':', ":")?;
    // 05
    let (sec, rest) = getnum(v, true).ok_or_else(|| element("05", v))?;
    if sec >= 60 {
        return Err(out_of_range("second"));
    }
    v = rest;
    // .000000: exactly six digits after '.' or ','.
    if v.len() < 7 || !matches!(v[0], b'.' | b',') {
        return Err(element(".000000", v));
    }
    let micros = atoi(&v[1..7]).ok_or_else(|| element(".000000", v))?;
    if micros < 0 {
        return Err(out_of_range("fractional second"));
    }
    v = &v[7..];
    // Z07:00
    let offset = if v.first() == Some(&b'Z') {
        v = &v[1..];
        0
    } else {
        let bad = || element("Z07:00", v);
        if v.len() < 6 || v[3] != b':' {
            return Err(bad());
        }
        // Go reads the minutes only once the hours parsed, and checks the
        // ranges before the sign.
        let hh = getnum(&v[1..3], true).map(|(n, _)| n);
        let mm = hh.and(getnum(&v[4..6], true).map(|(n, _)| n));
        let (hr, mi) = (hh.unwrap_or(0), mm.unwrap_or(0));
        if hr > 24 {
            return Err(out_of_range("time zone offset hour"));
        }
        if mi > 60 {
            return Err(out_of_range("time zone offset minute"));
        }
        let secs = i64::from(hr * 60 + mi) * 60;
        let offset = match v[0] {
            b'+' if mm.is_some() => secs,
            b'-' if mm.is_some() => -secs,
            _ => return Err(bad()),
        };
        v = &v[6..];
        offset
    };
    if !v.is_empty() {
        return Err(ParseError::Message(format!(": extra text: {}", quote(v))));
    }
    if day < 1 || day > days_in(month, year) {
        return Err(out_of_range("day"));
    }
    Ok(Parsed {
        year,
        month,
        day,
        hour,
        min,
        sec,
        micros: micros as u32,
        offset,
    })
}

fn is_digit(s: &[u8], i: usize) -> bool {
    s.get(i).is_some_and(u8::is_ascii_digit)
}

/// Go's `getnum`: one or two digits (exactly two if `fixed`).
fn getnum(s: &[u8], fixed: bool) -> Option<(u32, &[u8])> {
    if !is_digit(s, 0) {
        return None;
    }
    if !is_digit(s, 1) {
        if fixed {
            return None;
        }
        return Some((u32::from(s[0] - b'0'), &s[1..]));
    }
    Some((
        u32::from(s[0] - b'0') * 10 + u32::from(s[1] - b'0'),
        &s[2..],
    ))
}

/// Go's `atoi` of the time package: an optional sign, then digits only.
fn atoi(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
    Some(if neg { -n } else { n })
}

/// A literal of the layout; on a mismatch Go reports the value from there.
fn skip<'a>(v: &'a [u8], want: u8, layout_elem: &'static str) -> Result<&'a [u8], ParseError> {
    match v.first() {
        Some(&c) if c == want => Ok(&v[1..]),
        _ => Err(element(layout_elem, v)),
    }
}

fn days_in(month: u32, year: i64) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's days-from-civil (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Go's `time.quote`: in double quotes, `"` and `\` escaped, bytes outside
/// printable ASCII as `\xNN`.
fn quote(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for &b in s {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..0x80 => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}
