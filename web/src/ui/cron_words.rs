//! A cron expression in words ("every day at 02:00"), for the schedule
//! lists and the schedule form. Common shapes only; anything else is shown
//! as the expression itself. The next run times (the real answer) come
//! from `rm-cron`.

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn num(s: &str, max: u32) -> Option<u32> {
    s.parse::<u32>().ok().filter(|n| *n <= max)
}

fn day_name(s: &str) -> Option<&'static str> {
    match s.to_ascii_lowercase().as_str() {
        "0" | "7" | "sun" => Some(DAYS[0]),
        "1" | "mon" => Some(DAYS[1]),
        "2" | "tue" => Some(DAYS[2]),
        "3" | "wed" => Some(DAYS[3]),
        "4" | "thu" => Some(DAYS[4]),
        "5" | "fri" => Some(DAYS[5]),
        "6" | "sat" => Some(DAYS[6]),
        _ => None,
    }
}

/// Reads a five-field cron expression aloud.
pub fn describe(expr: &str) -> String {
    let f: Vec<&str> = expr.split_whitespace().collect();
    let fallback = || format!("cron {expr}");
    let [min, hour, dom, mon, dow] = f.as_slice() else {
        return match expr.trim() {
            "@daily" | "@midnight" => "every day at 00:00".into(),
            "@hourly" => "every hour at :00".into(),
            "@weekly" => "every Sunday at 00:00".into(),
            "@monthly" => "on day 1 of every month at 00:00".into(),
            _ => fallback(),
        };
    };
    if let Some(step) = min.strip_prefix("*/").and_then(|s| num(s, 59)) {
        if [*hour, *dom, *mon, *dow] == ["*", "*", "*", "*"] {
            return format!("every {step} minutes");
        }
        return fallback();
    }
    let Some(m) = num(min, 59) else {
        return fallback();
    };
    if *hour == "*" && [*dom, *mon, *dow] == ["*", "*", "*"] {
        return format!("every hour at :{m:02}");
    }
    if let Some(step) = hour.strip_prefix("*/").and_then(|s| num(s, 23)) {
        if [*dom, *mon, *dow] == ["*", "*", "*"] {
            return format!("every {step} hours at :{m:02}");
        }
        return fallback();
    }
    let Some(h) = num(hour, 23) else {
        return fallback();
    };
    let at = format!("{h:02}:{m:02}");
    match (*dom, *mon, *dow) {
        ("*", "*", "*") => format!("every day at {at}"),
        ("*", "*", "1-5") => format!("on weekdays at {at}"),
        ("*", "*", d) => match day_name(d) {
            Some(name) => format!("every {name} at {at}"),
            None => fallback(),
        },
        (d, "*", "*") => match num(d, 31) {
            Some(d) if d >= 1 => format!("on day {d} of every month at {at}"),
            _ => fallback(),
        },
        _ => fallback(),
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn common_shapes_read_as_words() {
        assert_eq!(describe("0 2 * * *"), "every day at 02:00");
        assert_eq!(describe("30 23 * * 1-5"), "on weekdays at 23:30");
        assert_eq!(describe("15 4 * * sun"), "every Sunday at 04:15");
        assert_eq!(describe("*/15 * * * *"), "every 15 minutes");
        assert_eq!(describe("5 * * * *"), "every hour at :05");
        assert_eq!(describe("0 */6 * * *"), "every 6 hours at :00");
        assert_eq!(describe("0 3 1 * *"), "on day 1 of every month at 03:00");
    }

    #[test]
    fn anything_else_is_shown_as_the_expression() {
        assert_eq!(describe("0 2 1-7 * 1"), "cron 0 2 1-7 * 1");
        assert_eq!(describe("nonsense"), "cron nonsense");
    }
}
