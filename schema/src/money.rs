//! Money: an integer number of fen (0.01 CNY). Never a float; arithmetic is checked.

use serde::{Deserialize, Serialize};

/// The largest amount JSON clients can carry exactly (2^53 - 1).
pub const MONEY_JSON_MAX: i64 = (1 << 53) - 1;

/// An amount in fen.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(pub i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub fn checked_add(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }

    pub fn checked_sub(self, other: Money) -> Option<Money> {
        self.0.checked_sub(other.0).map(Money)
    }

    /// True when the amount can travel through JSON without losing precision.
    pub fn fits_json(self) -> bool {
        (-MONEY_JSON_MAX..=MONEY_JSON_MAX).contains(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic_refuses_overflow() {
        assert_eq!(Money(i64::MAX).checked_add(Money(1)), None);
        assert_eq!(Money(i64::MIN).checked_sub(Money(1)), None);
        assert_eq!(Money(5).checked_sub(Money(7)), Some(Money(-2)));
    }

    #[test]
    fn json_range_is_the_exact_double_range() {
        assert!(Money(MONEY_JSON_MAX).fits_json());
        assert!(!Money(MONEY_JSON_MAX + 1).fits_json());
    }
}
