//! Timestamps as RFC 3339 text, without a date-time dependency.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats a point in time as RFC 3339 in UTC with nanoseconds, e.g.
/// `2026-11-22T20:48:39.123456789Z`. Times before 1970 work too.
pub fn rfc3339(t: SystemTime) -> String {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    };
    rfc3339_from_unix(secs, nanos)
}

/// Formats `secs` seconds (and `nanos`) after the Unix epoch as RFC 3339 in UTC.
pub fn rfc3339_from_unix(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if nanos == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{nanos:09}Z")
    }
}

/// Year, month (1–12) and day (1–31) of a count of days since 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339_from_unix(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_unix(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339_from_unix(1_700_000_000, 5),
            "2023-11-14T22:13:20.000000005Z"
        );
        assert_eq!(rfc3339_from_unix(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_from_unix(253_402_300_799, 0),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(rfc3339_from_unix(4_107_542_400, 0), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn system_time_before_epoch() {
        let t = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(rfc3339(t), "1969-12-31T23:59:58.500000000Z");
    }

    #[test]
    fn days_round_trip_through_every_day_of_four_centuries() {
        // Consecutive days must give consecutive dates.
        let (mut py, mut pm, mut pd) = civil_from_days(-1);
        for z in 0..146_097 * 4 {
            let (y, m, d) = civil_from_days(z);
            let next_day = y == py && m == pm && d == pd + 1;
            let next_month = y == py && m == pm + 1 && d == 1;
            let next_year = y == py + 1 && m == 1 && d == 1 && pm == 12 && pd == 31;
            assert!(next_day || next_month || next_year, "day {z}: {y}-{m}-{d}");
            (py, pm, pd) = (y, m, d);
        }
    }
}
