//! Visitor reservation rules (SPEC §13): the real-name check of a resident ID number, a
//! licence plate's shape, and what a visitor's pass QR code carries.

use jiff::civil::Date;

/// What a visitor's pass QR code carries before the pass.
pub const QR_PREFIX: &str = "onecard:visit:";

/// What a visitor's pass QR code carries.
pub fn qr_text(pass: &str) -> String {
    format!("{QR_PREFIX}{pass}")
}

/// A pass as scanned: with or without its QR code's prefix, surrounding space dropped.
pub fn pass_of(scanned: &str) -> &str {
    let s = scanned.trim();
    s.strip_prefix(QR_PREFIX).unwrap_or(s)
}

/// Whether `id` is a valid 18-character resident ID number (GB 11643-1999): a real birth
/// date at characters 7–14, and the ISO 7064 MOD 11-2 check character last (`X` for 10,
/// either case). This is the check a real-name switch can make without calling out; a
/// registry lookup needs a provider.
pub fn resident_id_valid(id: &str) -> bool {
    let b = id.trim().as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> i32 {
        std::str::from_utf8(&b[r])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(-1)
    };
    let (y, m, d) = (digits(6..10), digits(10..12), digits(12..14));
    let born = i16::try_from(y)
        .ok()
        .and_then(|y| Date::new(y, i8::try_from(m).ok()?, i8::try_from(d).ok()?).ok());
    if born.is_none_or(|d| d.year() < 1900) {
        return false;
    }
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = b[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(c, w)| u32::from(c - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize];
    b[17].to_ascii_uppercase() == check
}

/// A licence plate as stored: spaces, dots and dashes dropped, upper-cased. `None` unless
/// it is then 5 to 10 characters of letters, digits and CJK (a province's character).
pub fn normalize_plate(plate: &str) -> Option<String> {
    let p: String = plate
        .chars()
        .filter(|c| !matches!(c, ' ' | '·' | '.' | '-'))
        .flat_map(char::to_uppercase)
        .collect();
    let n = p.chars().count();
    let ok = (5..=10).contains(&n)
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || ('\u{4e00}'..='\u{9fff}').contains(&c));
    ok.then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resident_id_needs_its_check_character_and_a_real_birth_date() {
        // The standard's own example (its check character is X), and another.
        assert!(resident_id_valid("11010519491231002X"));
        assert!(resident_id_valid("11010519491231002x"));
        assert!(resident_id_valid("440524198001010013"));
        assert!(!resident_id_valid("440524188001010014"), "born before 1900");
        assert!(
            !resident_id_valid("110105194912310021"),
            "wrong check character"
        );
        assert!(!resident_id_valid("110105194902300027"), "30 February");
        assert!(!resident_id_valid("11010519491231002"), "17 characters");
        assert!(!resident_id_valid("1101051949123100XX"));
        assert!(!resident_id_valid(""));
    }

    #[test]
    fn plates_and_passes_are_read_as_typed_or_scanned() {
        assert_eq!(normalize_plate("沪A·12345").as_deref(), Some("沪A12345"));
        assert_eq!(
            normalize_plate(" jing-b 6789d ").as_deref(),
            Some("JINGB6789D")
        );
        assert_eq!(normalize_plate("A1"), None);
        assert_eq!(normalize_plate("沪A<script>"), None);
        assert_eq!(pass_of(&qr_text("abc")), "abc");
        assert_eq!(pass_of(" abc "), "abc");
    }
}
