//! Calendar arithmetic for formatting timestamps on hot paths.
//!
//! Hand-written rather than through `chrono`: sources format millions of
//! dates per second, and converting a day count to a civil date is a dozen
//! integer operations (Howard Hinnant's algorithm), cheaper than building a
//! calendar type per value; likewise the text is written digit by digit
//! instead of through `format!`. This module never allocates beyond the
//! string it is asked to append to.

use std::fmt::Write as _;

/// Days since 1970-01-01 to the civil date `(year, month, day)`
/// (proleptic Gregorian calendar; negative days are before 1970).
///
/// ```
/// use deltaforge_common::time::civil_from_days;
/// assert_eq!(civil_from_days(0), (1970, 1, 1));
/// assert_eq!(civil_from_days(19_723), (2024, 1, 1));
/// assert_eq!(civil_from_days(-1), (1969, 12, 31));
/// ```
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Appends `n` as at least two digits (`{n:02}`).
pub fn push_two_digits(out: &mut String, n: u32) {
    if n < 100 {
        out.push(char::from(b'0' + (n / 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    } else {
        let _ = write!(out, "{n:02}");
    }
}

/// Appends `YYYY-MM-DDTHH:MM:SS`, exactly what
/// `format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")` writes.
///
/// ```
/// let mut s = String::new();
/// deltaforge_common::time::push_datetime(&mut s, 2026, 1, 2, 3, 4, 5);
/// assert_eq!(s, "2026-01-02T03:04:05");
/// ```
pub fn push_datetime(out: &mut String, y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) {
    if (0..=9999).contains(&y) {
        push_two_digits(out, (y / 100) as u32);
        push_two_digits(out, (y % 100) as u32);
    } else {
        let _ = write!(out, "{y:04}");
    }
    for (sep, n) in [('-', mo), ('-', d), ('T', h), (':', mi), (':', s)] {
        out.push(sep);
        push_two_digits(out, n);
    }
}

/// Appends `secs` seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS`
/// (UTC, proleptic Gregorian; negative is before 1970).
///
/// ```
/// let mut s = String::new();
/// deltaforge_common::time::push_unix_seconds(&mut s, 86_399);
/// assert_eq!(s, "1970-01-01T23:59:59");
/// ```
pub fn push_unix_seconds(out: &mut String, secs: i64) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400) as u32;
    push_datetime(out, y, m, d, rem / 3600, rem % 3600 / 60, rem % 60);
}

/// Appends the fractional seconds of `us` microseconds shown with `fsp`
/// digits (`.123`): nothing when both are zero, six digits when `fsp` is 0
/// (an unknown precision), at most six.
///
/// ```
/// let mut s = String::new();
/// deltaforge_common::time::push_fraction(&mut s, 123_000, 3);
/// assert_eq!(s, ".123");
/// ```
pub fn push_fraction(out: &mut String, us: u32, fsp: u8) {
    if fsp == 0 && us == 0 {
        return;
    }
    let fsp = if fsp == 0 { 6 } else { fsp.min(6) } as usize;
    if us >= 1_000_000 {
        // More than six digits: the first `fsp` of them, as `{us:06}` would.
        let digits = us.to_string();
        out.push('.');
        out.push_str(&digits[..fsp]);
        return;
    }
    out.push('.');
    let mut div = 100_000;
    for _ in 0..fsp {
        out.push(char::from(b'0' + (us / div % 10) as u8));
        div /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digit writers give what `format!` gives.
    #[test]
    fn writers_match_format() {
        for (y, mo, d, h, mi, s) in [
            (2026, 1, 2, 3, 4, 5),
            (0, 0, 0, 0, 0, 0),
            (9999, 12, 31, 23, 59, 59),
            (10_000, 1, 1, 0, 0, 0),
            (65_535, 99, 99, 838, 99, 99),
            (-1, 1, 1, 0, 0, 0),
            (7, 1, 1, 0, 0, 0),
        ] {
            let mut out = String::new();
            push_datetime(&mut out, y, mo, d, h, mi, s);
            assert_eq!(out, format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}"));
        }
        for us in [0, 1, 9, 10, 999, 123_456, 999_999, 1_000_000, 12_345_678] {
            for fsp in 0..=8u8 {
                let mut out = String::new();
                push_fraction(&mut out, us, fsp);
                let want = if fsp == 0 && us == 0 {
                    String::new()
                } else {
                    let n = if fsp == 0 { 6 } else { fsp.min(6) } as usize;
                    format!(".{}", &format!("{us:06}")[..n])
                };
                assert_eq!(out, want, "us {us} fsp {fsp}");
            }
        }
    }

    #[test]
    fn leap_years_and_century_rules() {
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(-25_508), (1900, 3, 1));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }
}
