//! Field rules as data: a check records every violation instead of stopping at the
//! first, so an answer (or an import report) can list them all.

use serde::Serialize;

/// One broken rule: which field, which rule, in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Violation {
    pub field: String,
    pub rule: String,
    pub message: String,
    /// For imports: the spreadsheet row (1-based, as the spreadsheet shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<u32>,
}

#[derive(Debug, Default)]
pub struct Checks {
    pub violations: Vec<Violation>,
    row: Option<u32>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Violations recorded from now on carry this spreadsheet row.
    pub fn at_row(&mut self, row: Option<u32>) {
        self.row = row;
    }

    pub fn fail(&mut self, field: &str, rule: &str, message: impl Into<String>) {
        self.violations.push(Violation {
            field: field.into(),
            rule: rule.into(),
            message: message.into(),
            row: self.row,
        });
    }

    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Text rules every free-text field obeys: a length in characters (not bytes) and
    /// no control characters (they break logs, terminals and PostgreSQL's text type).
    pub fn text(&mut self, field: &str, value: &str, min: usize, max: usize) -> bool {
        let n = value.chars().count();
        if n < min {
            let msg = if min == 1 {
                "must not be empty".to_string()
            } else {
                format!("needs at least {min} characters")
            };
            self.fail(field, if min == 1 { "required" } else { "min_length" }, msg);
            return false;
        }
        if n > max {
            self.fail(field, "max_length", format!("at most {max} characters"));
            return false;
        }
        if value.chars().any(char::is_control) {
            self.fail(
                field,
                "no_control_chars",
                "must not contain control characters",
            );
            return false;
        }
        if value.trim() != value {
            self.fail(field, "trimmed", "must not start or end with white space");
            return false;
        }
        true
    }

    pub fn into_result(self) -> Result<(), Vec<Violation>> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(self.violations)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_counts_characters_not_bytes() {
        let mut c = Checks::new();
        assert!(c.text("name", "食堂一二三四五六七八", 1, 10));
        assert!(!c.text("name", "食堂一二三四五六七八九", 1, 10));
        assert_eq!(c.violations[0].rule, "max_length");
    }

    #[test]
    fn text_refuses_empty_control_and_padded_values() {
        let mut c = Checks::new();
        c.text("a", "", 1, 5);
        c.text("b", "x\u{0}y", 1, 5);
        c.text("c", " x", 1, 5);
        let rules: Vec<_> = c.violations.iter().map(|v| v.rule.as_str()).collect();
        assert_eq!(rules, ["required", "no_control_chars", "trimmed"]);
    }
}
