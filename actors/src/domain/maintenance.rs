//! Equipment maintenance codes (SPEC §13): the time windows in which a device type's codes
//! are valid, in the tenant's time zone, and what a device's printed code looks like.

use jiff::civil::DateTime;
use onecard_schema::model::Window;

use super::booking::minutes_of;
use super::checkin::code_shape;

/// What a device's QR code carries before its code (the printed code beneath it is typed
/// without it).
pub const QR_PREFIX: &str = "onecard:device:";
/// Windows one device type may have.
pub const WINDOWS_MAX: usize = 14;

/// What a device's QR code carries.
pub fn qr_text(code: &str) -> String {
    format!("{QR_PREFIX}{code}")
}

/// A device code as typed or scanned (any case, spaces and dashes; or with its QR code's
/// prefix). `None` unless it has the code's shape.
pub fn normalise_code(input: &str) -> Option<String> {
    let input = input.trim();
    code_shape(input.strip_prefix(QR_PREFIX).unwrap_or(input))
}

/// What is wrong with a type's windows: (field, rule, message).
pub fn check_windows(windows: &[Window]) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    if windows.len() > WINDOWS_MAX {
        out.push((
            "windows".to_string(),
            "max_items",
            format!("at most {WINDOWS_MAX}"),
        ));
    }
    for (i, w) in windows.iter().enumerate() {
        let field = |name: &str| format!("windows[{i}].{name}");
        if w.days.is_empty() || w.days.len() > 7 || w.days.iter().any(|d| !(1..=7).contains(d)) {
            out.push((
                field("days"),
                "range",
                "one or more of 1 (Monday) to 7 (Sunday)".into(),
            ));
        }
        let from = minutes_of(&w.from).filter(|m| *m < 24 * 60);
        if from.is_none() {
            out.push((field("from"), "format", "HH:MM, 00:00 to 23:59".into()));
        }
        let to = minutes_of(&w.to);
        if to.is_none() {
            out.push((field("to"), "format", "HH:MM, 00:00 to 24:00".into()));
        }
        if from.is_some() && from == to {
            out.push((field("to"), "after", "differs from from".into()));
        }
    }
    out
}

/// Whether a code is valid at local time `at` under `windows` (always, when there are
/// none). A window whose `to` is at or before its `from` runs past midnight: its early
/// hours belong to the day after each of its days.
pub fn open_at(windows: &[Window], at: DateTime) -> bool {
    if windows.is_empty() {
        return true;
    }
    let day = at.weekday().to_monday_one_offset() as u8;
    let yesterday = if day == 1 { 7 } else { day - 1 };
    let now = u32::from(at.hour() as u8) * 60 + u32::from(at.minute() as u8);
    windows.iter().any(|w| {
        let (Some(from), Some(to)) = (minutes_of(&w.from), minutes_of(&w.to)) else {
            return false;
        };
        if from < to {
            w.days.contains(&day) && (from..to).contains(&now)
        } else {
            (w.days.contains(&day) && now >= from) || (w.days.contains(&yesterday) && now < to)
        }
    })
}

/// The windows as a person reads them: "Mon–Fri 08:00–18:00; Sat 22:00–06:00".
pub fn describe(windows: &[Window]) -> String {
    const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    windows
        .iter()
        .map(|w| {
            let mut days = w.days.clone();
            days.sort_unstable();
            days.dedup();
            let names: Vec<&str> = days
                .iter()
                .filter_map(|d| NAMES.get(usize::from(*d).wrapping_sub(1)).copied())
                .collect();
            format!("{} {}–{}", names.join(","), w.from, w.to)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn w(days: &[u8], from: &str, to: &str) -> Window {
        Window {
            days: days.to_vec(),
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn a_day_window_holds_from_its_start_until_its_end() {
        // 2026-12-07 is a Monday.
        let weekdays = [w(&[1, 2, 3, 4, 5], "08:00", "18:00")];
        let monday = date(2026, 12, 7);
        assert!(!open_at(&weekdays, monday.at(7, 59, 59, 0)));
        assert!(open_at(&weekdays, monday.at(8, 0, 0, 0)));
        assert!(open_at(&weekdays, monday.at(17, 59, 0, 0)));
        assert!(!open_at(&weekdays, monday.at(18, 0, 0, 0)));
        assert!(
            !open_at(&weekdays, date(2026, 12, 12).at(9, 0, 0, 0)),
            "a Saturday"
        );
        assert!(open_at(&[], monday.at(3, 0, 0, 0)), "no windows: always");
        let all_day = [w(&[1], "00:00", "24:00")];
        assert!(open_at(&all_day, monday.at(23, 59, 0, 0)));
    }

    #[test]
    fn a_night_window_runs_into_the_next_morning() {
        // Sunday night into Monday morning, and nothing else.
        let night = [w(&[7], "22:00", "06:00")];
        let sunday = date(2026, 12, 6);
        let monday = date(2026, 12, 7);
        assert!(open_at(&night, sunday.at(23, 0, 0, 0)));
        assert!(open_at(&night, monday.at(5, 59, 0, 0)));
        assert!(!open_at(&night, monday.at(6, 0, 0, 0)));
        assert!(
            !open_at(&night, monday.at(23, 0, 0, 0)),
            "Monday night is not in it"
        );
        assert!(
            !open_at(&night, sunday.at(5, 0, 0, 0)),
            "nor Sunday morning"
        );
    }

    #[test]
    fn windows_are_checked_and_described() {
        assert!(check_windows(&[w(&[1, 7], "22:00", "06:00")]).is_empty());
        let bad = check_windows(&[w(&[0, 8], "25:00", "8"), w(&[1], "08:00", "08:00")]);
        let fields: Vec<&str> = bad.iter().map(|(f, _, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "windows[0].days",
                "windows[0].from",
                "windows[0].to",
                "windows[1].to"
            ]
        );
        assert_eq!(check_windows(&vec![w(&[1], "08:00", "09:00"); 15]).len(), 1);
        assert_eq!(
            describe(&[w(&[5, 1, 1], "08:00", "18:00"), w(&[6], "22:00", "06:00")]),
            "Mon,Fri 08:00–18:00; Sat 22:00–06:00"
        );
    }

    #[test]
    fn a_device_code_is_read_from_its_qr_code_or_as_typed() {
        assert_eq!(qr_text("ABCDEFGH"), "onecard:device:ABCDEFGH");
        assert_eq!(
            normalise_code("onecard:device:ABCDEFGH").as_deref(),
            Some("ABCDEFGH")
        );
        assert_eq!(normalise_code(" abcd-efgh ").as_deref(), Some("ABCDEFGH"));
        assert_eq!(normalise_code("onecard:checkin:ABCDEFGH"), None);
    }
}
