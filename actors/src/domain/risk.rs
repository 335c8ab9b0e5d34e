//! Freeze rules (SPEC §5): three risk events within 24 hours freeze the payment code.
//! A person's first freeze ever lifts at 00:00 the next day in the tenant's time zone;
//! any later freeze (and every admin freeze) stays until an admin unfreezes.

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use onecard_schema::wallet::WalletRow;

pub const RISK_EVENTS_TO_FREEZE: usize = 3;
pub const RISK_WINDOW: SignedDuration = SignedDuration::from_hours(24);

/// Whether the wallet is frozen now. `frozen_until` in the past means the automatic
/// lift has happened.
pub fn is_frozen(w: &WalletRow, now: Timestamp) -> bool {
    w.frozen && w.frozen_until.is_none_or(|until| now < until)
}

/// The next local midnight after `now` in `tz`.
pub fn next_local_midnight(now: Timestamp, tz: &TimeZone) -> Timestamp {
    let date = now.to_zoned(tz.clone()).date();
    let tomorrow = date.tomorrow().unwrap_or(date);
    tomorrow
        .to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .unwrap_or(now + SignedDuration::from_hours(24))
}

/// Risk events that count now: within the window, and after the last lift of a freeze.
pub fn counted(events: &[Timestamp], w: &WalletRow, now: Timestamp) -> usize {
    let since = now - RISK_WINDOW;
    let lifted = if w.frozen { None } else { w.frozen_until };
    let lifted = match (w.frozen, w.frozen_until) {
        // An automatic lift that has passed also restarts the count.
        (true, Some(until)) if until <= now => Some(until),
        _ => lifted,
    };
    events
        .iter()
        .filter(|at| **at > since && lifted.is_none_or(|l| **at >= l))
        .count()
}

/// Freezes the wallet (a rule or an admin did it).
pub fn freeze(w: &mut WalletRow, now: Timestamp, tz: &TimeZone, by_admin: bool) {
    w.freeze_count += 1;
    w.frozen = true;
    w.frozen_until = if w.freeze_count == 1 && !by_admin {
        Some(next_local_midnight(now, tz))
    } else {
        None
    };
}

/// Lifts a freeze; `frozen_until` then records when, so older risk events stop counting.
pub fn unfreeze(w: &mut WalletRow, now: Timestamp) {
    w.frozen = false;
    w.frozen_until = Some(now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use onecard_schema::ids::{TenantId, UserId};

    fn wallet() -> WalletRow {
        WalletRow::empty(TenantId::new(), UserId::new(), Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn midnight_is_local_to_the_tenant() {
        let shanghai = TimeZone::get("Asia/Shanghai").unwrap();
        // 2026-11-25 23:30 in Shanghai is 15:30 UTC.
        let now: Timestamp = "2026-11-25T15:30:00Z".parse().unwrap();
        assert_eq!(
            next_local_midnight(now, &shanghai),
            "2026-11-25T16:00:00Z".parse::<Timestamp>().unwrap()
        );
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(
            next_local_midnight(now, &berlin),
            "2026-11-25T23:00:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn the_first_freeze_lifts_at_midnight_and_a_second_waits_for_an_admin() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let now: Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
        let mut w = wallet();
        freeze(&mut w, now, &tz, false);
        assert!(is_frozen(&w, now));
        let midnight: Timestamp = "2026-11-25T16:00:00Z".parse().unwrap();
        assert!(is_frozen(&w, midnight - SignedDuration::from_secs(1)));
        assert!(!is_frozen(&w, midnight));
        freeze(&mut w, midnight + SignedDuration::from_hours(1), &tz, false);
        assert_eq!(w.frozen_until, None);
        assert!(is_frozen(&w, midnight + SignedDuration::from_hours(100)));
        unfreeze(&mut w, midnight + SignedDuration::from_hours(101));
        assert!(!is_frozen(&w, midnight + SignedDuration::from_hours(101)));
    }

    #[test]
    fn events_before_a_lift_or_outside_the_window_do_not_count() {
        let now: Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
        let h = |n: i64| now - SignedDuration::from_hours(n);
        let mut w = wallet();
        assert_eq!(counted(&[h(30), h(5), h(1)], &w, now), 2);
        unfreeze(&mut w, h(2));
        assert_eq!(counted(&[h(5), h(1)], &w, now), 1);
    }
}
