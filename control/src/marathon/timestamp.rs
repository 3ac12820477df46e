//! Marathon's timestamps: ISO-8601 in UTC with milliseconds
//! (`2016-09-13T10:33:06.281Z`), the form clients parse (the Python client
//! reads `%Y-%m-%dT%H:%M:%S.%fZ`). Pure.

/// Formats milliseconds since the Unix epoch.
pub fn iso8601_utc_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's `civil_from_days`: 400-year eras from 0000-03-01).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::iso8601_utc_ms;

    #[test]
    fn formats_marathon_timestamps() {
        assert_eq!(iso8601_utc_ms(0), "1970-01-01T00:00:00.000Z");
        // Marathon's documentation example.
        assert_eq!(
            iso8601_utc_ms(1_473_762_786_281),
            "2016-09-13T10:33:06.281Z"
        );
        // A leap day and the last millisecond of a leap year.
        assert_eq!(iso8601_utc_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            iso8601_utc_ms(1_735_689_599_999),
            "2024-12-31T23:59:59.999Z"
        );
        assert_eq!(
            iso8601_utc_ms(4_107_542_400_000),
            "2100-03-01T00:00:00.000Z"
        );
    }
}
