//! Event check-in rules (SPEC §13): the event's code, its window, its geofence, and why a
//! check-in is refused.

use jiff::Timestamp;
use onecard_schema::model::{CheckinEvent, Geofence};
use rand::Rng;

/// The characters of a check-in code: digits and capitals without the look-alikes
/// (0/O, 1/I/L), so a code read off a screen is typed right.
pub const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
pub const CODE_LEN: usize = 8;

/// A fresh random code (31⁸ ≈ 8.5 × 10¹¹ of them).
pub fn new_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char)
        .collect()
}

/// A code as typed or scanned: spaces and dashes dropped, upper-cased, and a QR code's
/// `onecard:checkin:` prefix taken off. `None` unless it then has the code's shape.
pub fn normalise_code(input: &str) -> Option<String> {
    let input = input.trim();
    code_shape(input.strip_prefix(QR_PREFIX).unwrap_or(input))
}

/// `input` as a code (of an event or a collection code): spaces and dashes dropped,
/// upper-cased; `None` unless it then has the code's shape.
pub fn code_shape(input: &str) -> Option<String> {
    let code: String = input
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == CODE_LEN && code.bytes().all(|b| CODE_ALPHABET.contains(&b))).then_some(code)
}

/// What an event's QR code carries before its code.
pub const QR_PREFIX: &str = "onecard:checkin:";

/// Metres between two points on the Earth (haversine, mean radius): well within a metre
/// of the ellipsoid's answer at the few hundred metres a geofence spans.
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    const EARTH_RADIUS_M: f64 = 6_371_008.8;
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = lat2 - lat1;
    let dlng = (b.1 - a.1).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlng / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// Why a check-in is refused.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// The person is not an active member of the event's organisation.
    NotAMember,
    /// Before check-in opens or after the event ended.
    NotOpen {
        opens_at: Timestamp,
        closes_at: Timestamp,
    },
    /// The event has designated attendees and the person is not one.
    NotDesignated,
    /// The event has a geofence and no location came with the check-in.
    LocationRequired,
    /// The person's location is outside the geofence.
    OutsideGeofence { distance_m: u32, radius_m: u32 },
}

impl Refusal {
    /// The problem code, also the `reason` of the `checkin.failed` event.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotAMember => "not_a_member",
            Refusal::NotOpen { .. } => "event_not_open",
            Refusal::NotDesignated => "not_designated",
            Refusal::LocationRequired => "location_required",
            Refusal::OutsideGeofence { .. } => "outside_geofence",
        }
    }

    /// What the person is told.
    pub fn detail(&self) -> String {
        match self {
            Refusal::NotAMember => {
                "you are not an active member of the organisation holding this event".into()
            }
            Refusal::NotOpen {
                opens_at,
                closes_at,
            } => {
                format!("check-in is open from {opens_at} until {closes_at}")
            }
            Refusal::NotDesignated => "you are not on this event's list of attendees".into(),
            Refusal::LocationRequired => {
                "this event checks where you are: send your location with the check-in".into()
            }
            Refusal::OutsideGeofence {
                distance_m,
                radius_m,
            } => format!(
                "you are {distance_m} m from the event; check-in is within {radius_m} m of it"
            ),
        }
    }
}

/// Whether the event takes check-ins at `now`.
pub fn check_window(event: &CheckinEvent, now: Timestamp) -> Result<(), Refusal> {
    let opens_at = event.opens_at();
    if now < opens_at || now > event.ends_at {
        return Err(Refusal::NotOpen {
            opens_at,
            closes_at: event.ends_at,
        });
    }
    Ok(())
}

/// The distance from the geofence's centre, in whole metres (rounded up), when the event
/// has one and `at` is inside it; `None` without a geofence.
pub fn check_fence(
    fence: Option<Geofence>,
    at: Option<(f64, f64)>,
) -> Result<Option<u32>, Refusal> {
    let Some(fence) = fence else {
        return Ok(None);
    };
    let at = at.ok_or(Refusal::LocationRequired)?;
    let d = distance_m((fence.latitude, fence.longitude), at).ceil();
    let distance_m = if d.is_finite() && d < f64::from(u32::MAX) {
        d as u32
    } else {
        u32::MAX
    };
    if distance_m > fence.radius_m {
        return Err(Refusal::OutsideGeofence {
            distance_m,
            radius_m: fence.radius_m,
        });
    }
    Ok(Some(distance_m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;
    use onecard_schema::ids::CheckinEventId;

    fn event(fence: Option<Geofence>) -> CheckinEvent {
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        CheckinEvent {
            id: CheckinEventId::new(),
            name: "Orientation".into(),
            code: new_code(),
            starts_at: start,
            ends_at: start + SignedDuration::from_hours(2),
            early_minutes: 30,
            geofence: fence,
            designated: false,
            attendees: 0,
            checked_in: 0,
            created_at: start,
            updated_at: start,
        }
    }

    #[test]
    fn codes_use_the_alphabet_and_read_back_however_they_are_typed() {
        for _ in 0..1000 {
            let code = new_code();
            assert_eq!(code.len(), CODE_LEN);
            assert_eq!(normalise_code(&code).as_deref(), Some(code.as_str()));
            let typed = format!(" {}-{} ", &code[..4], &code[4..]).to_lowercase();
            assert_eq!(normalise_code(&typed).as_deref(), Some(code.as_str()));
            let scanned = format!("{QR_PREFIX}{code}");
            assert_eq!(normalise_code(&scanned).as_deref(), Some(code.as_str()));
        }
        for bad in [
            "",
            "ABCDEFG",
            "ABCDEFGHJ",
            "ABCDEFG0",
            "ABCDEFGI",
            "ABCDÉFGH",
        ] {
            assert_eq!(normalise_code(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn distances_match_known_ones() {
        // One degree of latitude is 111.2 km on the mean sphere.
        let d = distance_m((0.0, 0.0), (1.0, 0.0));
        assert!((d - 111_195.0).abs() < 1.0, "{d}");
        // One degree of longitude at 60° north is half as long.
        let d = distance_m((60.0, 10.0), (60.0, 11.0));
        assert!((d - 55_597.0).abs() < 60.0, "{d}");
        assert_eq!(distance_m((31.2, 121.4), (31.2, 121.4)), 0.0);
        // Antipodes: half the circumference, and no NaN from rounding.
        let d = distance_m((0.0, 0.0), (0.0, 180.0));
        assert!((d - 20_015_115.0).abs() < 10.0, "{d}");
    }

    #[test]
    fn the_window_opens_early_minutes_before_the_start_and_closes_at_the_end() {
        let e = event(None);
        let opens = e.starts_at - SignedDuration::from_mins(30);
        assert!(check_window(&e, opens).is_ok());
        assert!(check_window(&e, e.ends_at).is_ok());
        let refused = check_window(&e, opens - SignedDuration::from_millis(1)).unwrap_err();
        assert_eq!(
            refused,
            Refusal::NotOpen {
                opens_at: opens,
                closes_at: e.ends_at
            }
        );
        assert!(check_window(&e, e.ends_at + SignedDuration::from_millis(1)).is_err());
    }

    #[test]
    fn the_fence_needs_a_location_inside_its_radius() {
        let fence = Geofence {
            latitude: 31.2304,
            longitude: 121.4737,
            radius_m: 100,
        };
        assert_eq!(check_fence(None, None), Ok(None));
        assert_eq!(check_fence(None, Some((0.0, 0.0))), Ok(None));
        assert_eq!(
            check_fence(Some(fence), None),
            Err(Refusal::LocationRequired)
        );
        assert_eq!(
            check_fence(Some(fence), Some((31.2304, 121.4737))),
            Ok(Some(0))
        );
        // About 89 m north: inside.
        let inside = check_fence(Some(fence), Some((31.2312, 121.4737))).unwrap();
        assert!(
            matches!(inside, Some(d) if (85..=95).contains(&d)),
            "{inside:?}"
        );
        // About 111 m north: outside, and it says how far.
        match check_fence(Some(fence), Some((31.2314, 121.4737))) {
            Err(Refusal::OutsideGeofence {
                distance_m,
                radius_m: 100,
            }) => assert!((105..=115).contains(&distance_m), "{distance_m}"),
            other => panic!("{other:?}"),
        }
    }
}
