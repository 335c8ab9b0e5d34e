//! Rules for the directory's fields: who a cardholder is, how their number, phone and
//! ID-document number must look. Shared by the REST handlers and the spreadsheet import.

use super::validate::Checks;

/// Longest person name, in characters.
pub const USER_NAME_CHARS_MAX: usize = 64;
/// Longest student/staff number, in characters.
pub const USER_NUMBER_CHARS_MAX: usize = 32;
/// Longest identity label, in characters.
pub const IDENTITY_CHARS_MAX: usize = 32;
/// Longest department name, in characters.
pub const DEPARTMENT_NAME_CHARS_MAX: usize = 64;
/// Longest tag name, in characters.
pub const TAG_NAME_CHARS_MAX: usize = 32;
/// Deepest department tree: deep enough for university → school → faculty → group.
pub const DEPARTMENT_DEPTH_MAX: usize = 10;

pub fn check_name(c: &mut Checks, field: &str, name: &str) {
    c.text(field, name, 1, USER_NAME_CHARS_MAX);
}

/// Numbers are printed on cards and typed at tills: letters, digits, `.`, `_`, `-`.
pub fn check_number(c: &mut Checks, field: &str, number: &str) {
    if c.text(field, number, 1, USER_NUMBER_CHARS_MAX)
        && !number
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
    {
        c.fail(field, "pattern", "only letters, digits, '.', '_' and '-'");
    }
}

/// A phone number after spaces and dashes are removed: optional `+`, 5 to 20 digits.
pub fn normalize_phone(phone: &str) -> Option<String> {
    let compact: String = phone
        .chars()
        .filter(|ch| !matches!(ch, ' ' | '-'))
        .collect();
    let digits = compact.strip_prefix('+').unwrap_or(&compact);
    ((5..=20).contains(&digits.len()) && digits.chars().all(|ch| ch.is_ascii_digit()))
        .then_some(compact)
}

pub fn check_phone(c: &mut Checks, field: &str, phone: &str) -> Option<String> {
    let normalized = normalize_phone(phone);
    if normalized.is_none() {
        c.fail(
            field,
            "pattern",
            "a phone number: optional '+' and 5 to 20 digits",
        );
    }
    normalized
}

/// An ID-document number, upper-cased: 6 to 32 letters and digits (an 18-character
/// resident ID may end in `X`).
pub fn normalize_id_number(id: &str) -> Option<String> {
    let upper = id.trim().to_ascii_uppercase();
    ((6..=32).contains(&upper.len()) && upper.chars().all(|ch| ch.is_ascii_alphanumeric()))
        .then_some(upper)
}

pub fn check_id_number(c: &mut Checks, field: &str, id: &str) -> Option<String> {
    let normalized = normalize_id_number(id);
    if normalized.is_none() {
        c.fail(field, "pattern", "6 to 32 letters and digits");
    }
    normalized
}

/// The last four characters, the most of an ID number that is ever shown.
pub fn id_last4(normalized: &str) -> String {
    let n = normalized.chars().count();
    normalized.chars().skip(n.saturating_sub(4)).collect()
}

/// How an ID number is shown: four stars and at most the last four characters.
pub fn mask_id_number(last4: &str) -> String {
    format!("****{last4}")
}

pub fn check_identity(c: &mut Checks, field: &str, identity: &str) {
    c.text(field, identity, 1, IDENTITY_CHARS_MAX);
}

/// Splits a department path like `Teaching/Maths` into its names.
pub fn split_department_path(path: &str) -> Vec<&str> {
    path.split('/').map(str::trim).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_normalized_or_refused() {
        assert_eq!(
            normalize_phone("138-0000 0000").as_deref(),
            Some("13800000000")
        );
        assert_eq!(
            normalize_phone("+8613800000000").as_deref(),
            Some("+8613800000000")
        );
        assert_eq!(normalize_phone("12ab5"), None);
        assert_eq!(normalize_phone("1234"), None);
    }

    #[test]
    fn id_numbers_keep_only_the_last_four_for_display() {
        let id = normalize_id_number("11010519491231002x").unwrap();
        assert_eq!(id, "11010519491231002X");
        assert_eq!(id_last4(&id), "002X");
        assert_eq!(mask_id_number(&id_last4(&id)), "****002X");
        assert_eq!(normalize_id_number("12345"), None);
        assert_eq!(normalize_id_number("1234567-"), None);
    }

    #[test]
    fn numbers_allow_only_card_friendly_characters() {
        let mut c = Checks::new();
        check_number(&mut c, "number", "S2024-001_a.b");
        assert!(c.is_ok());
        check_number(&mut c, "number", "S 001");
        assert_eq!(c.violations[0].rule, "pattern");
    }

    #[test]
    fn department_paths_split_on_slashes() {
        assert_eq!(
            split_department_path("Teaching / Maths"),
            ["Teaching", "Maths"]
        );
    }
}
