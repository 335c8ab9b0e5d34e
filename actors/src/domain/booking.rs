//! Room booking rules (SPEC §13): a room's opening hours and slots, in the tenant's time
//! zone, and whether a booking fits them.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use onecard_schema::booking_store::GRANULE_MINUTES;
use onecard_schema::model::Room;

/// Minutes after midnight of `HH:MM` (00:00 to 24:00).
pub fn minutes_of(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let total = h * 60 + m;
    (m < 60 && total <= 24 * 60).then_some(total)
}

/// What is wrong with a room's hours and slots: (field, rule, message).
pub fn check_room(room: &Room) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    let opens = minutes_of(&room.opens).filter(|m| *m < 24 * 60);
    let closes = minutes_of(&room.closes);
    if opens.is_none() {
        out.push(("opens", "format", "HH:MM, 00:00 to 23:59".into()));
    }
    if closes.is_none() {
        out.push(("closes", "format", "HH:MM, 00:01 to 24:00".into()));
    }
    let granule = GRANULE_MINUTES as u32;
    if !(granule..=240).contains(&room.slot_minutes) || !room.slot_minutes.is_multiple_of(granule) {
        out.push((
            "slot_minutes",
            "range",
            format!("a multiple of {granule}, {granule} to 240"),
        ));
    } else if let (Some(o), Some(c)) = (opens, closes) {
        if c <= o {
            out.push(("closes", "after", "must be after opens".into()));
        } else if !o.is_multiple_of(granule) || !(c - o).is_multiple_of(room.slot_minutes) {
            out.push((
                "closes",
                "slots",
                format!(
                    "opening hours must be whole slots of {} minutes, on {granule}-minute marks",
                    room.slot_minutes
                ),
            ));
        }
    }
    if room.days.is_empty() || room.days.iter().any(|d| !(1..=7).contains(d)) {
        out.push((
            "days",
            "range",
            "one or more of 1 (Monday) to 7 (Sunday)".into(),
        ));
    } else {
        let mut d = room.days.clone();
        d.sort_unstable();
        d.dedup();
        if d.len() != room.days.len() {
            out.push(("days", "unique", "each day once".into()));
        }
    }
    if !(1..=96).contains(&room.max_slots) {
        out.push(("max_slots", "range", "1 to 96".into()));
    }
    if !(1..=100).contains(&room.max_per_person) {
        out.push(("max_per_person", "range", "1 to 100".into()));
    }
    if !(1..=365).contains(&room.book_ahead_days) {
        out.push(("book_ahead_days", "range", "1 to 365".into()));
    }
    if !(1..=100_000).contains(&room.capacity) {
        out.push(("capacity", "range", "1 to 100000".into()));
    }
    out
}

/// Why a booking does not fit its room: (field, rule, message).
pub type Misfit = (&'static str, &'static str, String);

/// Minutes after local midnight of `t` on `date` (1440 for the next midnight), if `t`
/// falls on a whole minute of that date.
fn local_minutes(t: Timestamp, tz: &TimeZone, date: Date) -> Option<u32> {
    let dt = t.to_zoned(tz.clone()).datetime();
    if dt.second() != 0 || dt.subsec_nanosecond() != 0 {
        return None;
    }
    let m = dt.hour() as u32 * 60 + dt.minute() as u32;
    if dt.date() == date {
        Some(m)
    } else if m == 0 && date.tomorrow().ok() == Some(dt.date()) {
        Some(24 * 60)
    } else {
        None
    }
}

/// Whether a booking from `starts_at` to `ends_at` fits the room at `now`: on one local
/// day it opens, inside its hours, on its slots, at most `max_slots` long, not over and
/// not further ahead than `book_ahead_days`.
pub fn check_booking(
    room: &Room,
    tz: &TimeZone,
    starts_at: Timestamp,
    ends_at: Timestamp,
    now: Timestamp,
) -> Result<(), Misfit> {
    let (Some(opens), Some(closes)) = (minutes_of(&room.opens), minutes_of(&room.closes)) else {
        return Err((
            "room_id",
            "hours",
            "the room has no valid opening hours".into(),
        ));
    };
    if ends_at <= starts_at {
        return Err(("ends_at", "after", "must be after starts_at".into()));
    }
    let date = starts_at.to_zoned(tz.clone()).date();
    let slot = room.slot_minutes;
    let (Some(m0), Some(m1)) = (
        local_minutes(starts_at, tz, date),
        local_minutes(ends_at, tz, date),
    ) else {
        return Err((
            "ends_at",
            "one_day",
            "a booking starts and ends on whole minutes of one day".into(),
        ));
    };
    let weekday = date.weekday().to_monday_one_offset() as u8;
    if !room.days.contains(&weekday) {
        return Err((
            "starts_at",
            "closed",
            format!("the room is closed on {:?}s", date.weekday()),
        ));
    }
    if m0 < opens || m1 > closes {
        return Err((
            "starts_at",
            "opening_hours",
            format!("the room is open {} to {}", room.opens, room.closes),
        ));
    }
    if !(m0 - opens).is_multiple_of(slot) || !(m1 - opens).is_multiple_of(slot) {
        return Err((
            "starts_at",
            "slots",
            format!(
                "bookings start and end on {slot}-minute slots from {}",
                room.opens
            ),
        ));
    }
    if (m1 - m0) / slot > room.max_slots {
        return Err((
            "ends_at",
            "max_slots",
            format!("at most {} slots of {slot} minutes", room.max_slots),
        ));
    }
    let slot_span = SignedDuration::from_mins(slot.into());
    if starts_at.checked_add(slot_span).is_ok_and(|end| end <= now) {
        return Err(("starts_at", "past", "this time has passed".into()));
    }
    let ahead = SignedDuration::from_hours(24 * i64::from(room.book_ahead_days));
    if now.checked_add(ahead).is_ok_and(|limit| starts_at >= limit) {
        return Err((
            "starts_at",
            "too_far_ahead",
            format!(
                "the room may be booked at most {} days ahead",
                room.book_ahead_days
            ),
        ));
    }
    Ok(())
}

/// The room's slots on `date` (empty when it is closed that day), as (start, end).
pub fn slots_on(room: &Room, tz: &TimeZone, date: Date) -> Vec<(Timestamp, Timestamp)> {
    let (Some(opens), Some(closes)) = (minutes_of(&room.opens), minutes_of(&room.closes)) else {
        return Vec::new();
    };
    if room.slot_minutes == 0
        || !room
            .days
            .contains(&(date.weekday().to_monday_one_offset() as u8))
    {
        return Vec::new();
    }
    let at = |m: u32| -> Option<Timestamp> {
        let dt = if m >= 24 * 60 {
            DateTime::from_parts(date.tomorrow().ok()?, Time::midnight())
        } else {
            DateTime::from_parts(date, Time::new((m / 60) as i8, (m % 60) as i8, 0, 0).ok()?)
        };
        dt.to_zoned(tz.clone()).ok().map(|z| z.timestamp())
    };
    (opens..closes)
        .step_by(room.slot_minutes as usize)
        .filter_map(|m| Some((at(m)?, at(m + room.slot_minutes)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use onecard_schema::ids::RoomId;

    fn room() -> Room {
        Room {
            id: RoomId::new(),
            name: "Seminar 1".into(),
            location: None,
            capacity: 12,
            opens: "08:00".into(),
            closes: "22:00".into(),
            days: vec![1, 2, 3, 4, 5],
            slot_minutes: 30,
            max_slots: 4,
            book_ahead_days: 14,
            max_per_person: 3,
            created_at: Timestamp::UNIX_EPOCH,
            updated_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn shanghai() -> TimeZone {
        TimeZone::get("Asia/Shanghai").unwrap()
    }

    /// A local time in Shanghai on Monday 2026-12-07.
    fn at(hh: i8, mm: i8) -> Timestamp {
        jiff::civil::date(2026, 12, 7)
            .at(hh, mm, 0, 0)
            .to_zoned(shanghai())
            .unwrap()
            .timestamp()
    }

    #[test]
    fn hours_read_as_minutes() {
        assert_eq!(minutes_of("08:30"), Some(510));
        assert_eq!(minutes_of("24:00"), Some(1440));
        for bad in ["8:30", "24:01", "12:60", "ab:cd", "", "08:3"] {
            assert_eq!(minutes_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_room_needs_whole_slots_inside_a_day() {
        assert!(check_room(&room()).is_empty());
        let fields = |r: Room| {
            check_room(&r)
                .into_iter()
                .map(|(f, _, _)| f)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(Room {
                closes: "07:00".into(),
                ..room()
            }),
            ["closes"]
        );
        assert_eq!(
            fields(Room {
                closes: "21:45".into(),
                ..room()
            }),
            ["closes"]
        );
        assert_eq!(
            fields(Room {
                slot_minutes: 7,
                ..room()
            }),
            ["slot_minutes"]
        );
        assert_eq!(
            fields(Room {
                days: vec![1, 1],
                ..room()
            }),
            ["days"]
        );
        assert_eq!(
            fields(Room {
                days: vec![8],
                ..room()
            }),
            ["days"]
        );
        assert_eq!(
            fields(Room {
                opens: "24:00".into(),
                ..room()
            }),
            ["opens"]
        );
        assert!(check_room(&Room {
            closes: "24:00".into(),
            ..room()
        })
        .is_empty());
    }

    #[test]
    fn a_booking_fits_on_the_slots_of_one_open_day() {
        let (r, tz) = (room(), shanghai());
        let now = at(7, 0);
        assert_eq!(check_booking(&r, &tz, at(9, 0), at(10, 0), now), Ok(()));
        assert_eq!(check_booking(&r, &tz, at(21, 0), at(22, 0), now), Ok(()));
        let rule = |s, e, now| check_booking(&r, &tz, s, e, now).unwrap_err().1;
        assert_eq!(rule(at(7, 30), at(8, 30), now), "opening_hours");
        assert_eq!(rule(at(21, 30), at(22, 30), now), "opening_hours");
        assert_eq!(rule(at(9, 15), at(10, 15), now), "slots");
        assert_eq!(rule(at(9, 0), at(11, 30), now), "max_slots");
        assert_eq!(rule(at(10, 0), at(9, 0), now), "after");
        assert_eq!(
            rule(
                at(9, 0),
                at(9, 0) + SignedDuration::from_secs(1800 + 1),
                now
            ),
            "one_day"
        );
        // Booked in the past, the current slot still open, two weeks ahead.
        assert_eq!(rule(at(9, 0), at(9, 30), at(9, 30)), "past");
        assert_eq!(
            check_booking(&r, &tz, at(9, 0), at(9, 30), at(9, 29)),
            Ok(())
        );
        let far = at(9, 0) - SignedDuration::from_hours(24 * 14);
        assert_eq!(rule(at(9, 0), at(9, 30), far), "too_far_ahead");
        // Sunday is closed.
        let sunday = at(9, 0) - SignedDuration::from_hours(24);
        assert_eq!(
            rule(sunday, sunday + SignedDuration::from_mins(30), far),
            "closed"
        );
    }

    #[test]
    fn a_day_has_its_slots_and_a_closed_day_none() {
        let (r, tz) = (room(), shanghai());
        let monday = jiff::civil::date(2026, 12, 7);
        let slots = slots_on(&r, &tz, monday);
        assert_eq!(slots.len(), 28);
        assert_eq!(slots[0], (at(8, 0), at(8, 30)));
        assert_eq!(slots[27], (at(21, 30), at(22, 0)));
        assert!(slots_on(&r, &tz, jiff::civil::date(2026, 12, 6)).is_empty());
        let late = Room {
            closes: "24:00".into(),
            ..room()
        };
        let last = *slots_on(&late, &tz, monday).last().unwrap();
        assert_eq!(last.1, at(0, 0) + SignedDuration::from_hours(24));
    }
}
