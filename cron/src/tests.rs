use super::*;

/// Unix ms of a wall-clock time in `tz`, taking the earlier instant when it
/// happens twice.
fn at(tz: &str, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> i64 {
    let zone = TimeZone::get(tz).unwrap();
    zone.to_ambiguous_zoned(jiff::civil::date(y, mo, d).at(h, mi, 0, 0))
        .earlier()
        .unwrap()
        .timestamp()
        .as_millisecond()
}

fn utc(s: &str) -> i64 {
    s.parse::<Timestamp>().unwrap().as_millisecond()
}

#[test]
fn daily_in_a_zone() {
    let s = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
    // 2024-01-10 02:30 CET = 01:30 UTC.
    let next = s.next_after_ms(utc("2024-01-10T00:00:00Z")).unwrap();
    assert_eq!(next, utc("2024-01-10T01:30:00Z"));
    assert_eq!(s.format_ms(next), "2024-01-10T02:30:00+01:00");
    // Strictly after: asking at the slot gives the next day's.
    assert_eq!(s.next_after_ms(next), Some(utc("2024-01-11T01:30:00Z")));
    assert_eq!(s.last_at_or_before_ms(next), Some(next));
}

#[test]
fn spring_forward_gap_runs_once_right_after_the_gap() {
    // Berlin skips 02:00–03:00 on 2024-03-31. A 02:30 job runs at 03:00 CEST.
    let s = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
    let runs = s.upcoming_ms(at("Europe/Berlin", 2024, 3, 30, 12, 0), 3);
    assert_eq!(
        runs,
        vec![
            at("Europe/Berlin", 2024, 3, 31, 3, 0),
            at("Europe/Berlin", 2024, 4, 1, 2, 30),
            at("Europe/Berlin", 2024, 4, 2, 2, 30),
        ]
    );
}

#[test]
fn fall_back_overlap_runs_a_fixed_time_job_once() {
    // Berlin repeats 02:00–03:00 on 2024-10-27.
    let s = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
    let runs = s.upcoming_ms(at("Europe/Berlin", 2024, 10, 26, 12, 0), 2);
    assert_eq!(runs[0], at("Europe/Berlin", 2024, 10, 27, 2, 30));
    assert_eq!(runs[1], at("Europe/Berlin", 2024, 10, 28, 2, 30));
    // 25 hours between them on that day, 24 + 1.
    assert_eq!(runs[1] - runs[0], 25 * 3_600_000);
}

#[test]
fn interval_jobs_keep_their_spacing_in_real_time_across_the_overlap() {
    let s = CronSchedule::parse("0 * * * *", "America/New_York").unwrap();
    // 2024-11-03 01:00 EDT happens, then 01:00 EST an hour later.
    let start = utc("2024-11-03T04:30:00Z"); // 00:30 EDT
    let runs = s.upcoming_ms(start, 4);
    let gaps: Vec<i64> = runs.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g == 3_600_000), "{runs:?}");
}

#[test]
fn weekday_and_month_names_and_nicknames() {
    let s = CronSchedule::parse("0 9 * JAN MON", "UTC").unwrap();
    let next = s.next_after_ms(utc("2024-01-01T10:00:00Z")).unwrap();
    assert_eq!(next, utc("2024-01-08T09:00:00Z"));
    let d = CronSchedule::parse("@daily", "UTC").unwrap();
    assert_eq!(
        d.next_after_ms(utc("2024-01-01T10:00:00Z")),
        Some(utc("2024-01-02T00:00:00Z"))
    );
}

#[test]
fn refuses_bad_expressions_and_zones() {
    assert!(matches!(
        CronSchedule::parse("61 * * * *", "UTC"),
        Err(CronError::Expression { .. })
    ));
    assert!(matches!(
        CronSchedule::parse("* * * *", "UTC"),
        Err(CronError::Expression { .. })
    ));
    // Seconds are not part of our five-field format.
    assert!(CronSchedule::parse("0 0 0 * * *", "UTC").is_err());
    assert_eq!(
        CronSchedule::parse("0 0 * * *", "Mars/Olympus").unwrap_err(),
        CronError::TimeZone("Mars/Olympus".into())
    );
}

#[test]
fn never_matching_pattern_has_no_next_run() {
    let s = CronSchedule::parse("0 0 30 2 *", "UTC").unwrap();
    assert_eq!(s.next_after_ms(utc("2024-01-01T00:00:00Z")), None);
}

#[test]
fn from_str_with_zone() {
    let s: CronSchedule = "15 4 * * * @ Asia/Tokyo".parse().unwrap();
    assert_eq!(s.timezone(), "Asia/Tokyo");
    assert_eq!(
        s.next_after_ms(utc("2024-05-01T00:00:00Z")),
        Some(utc("2024-05-01T19:15:00Z"))
    );
}
