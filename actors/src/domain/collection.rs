//! Canteen collection codes (SPEC §13): a merchant's static code, printed once and scanned
//! by cardholders' phones. Its QR code is the address of the pay page, so that any phone's
//! camera opens it; the code itself (8 characters, as an event's) is printed beneath it for
//! typing.

use super::checkin::code_shape;
pub use super::checkin::new_code;

/// The page a collection code's QR code opens, with `?code=<code>`.
pub const PAY_PAGE: &str = "/pay";

/// What a collection code's QR code carries: the pay page's address with the code.
pub fn qr_text(public_url: &str, code: &str) -> String {
    format!("{public_url}{PAY_PAGE}?code={code}")
}

/// A collection code as typed or scanned: the code itself in any case with spaces and
/// dashes, or the whole address its QR code carries. `None` unless it has the code's shape.
pub fn normalise_code(input: &str) -> Option<String> {
    let input = input.trim();
    let code = match input.rsplit_once("code=") {
        Some((_, rest)) => rest.split(['&', '#']).next().unwrap_or(rest),
        None => input,
    };
    code_shape(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_read_from_its_address_or_as_typed() {
        let code = new_code();
        let url = qr_text("https://card.example.edu", &code);
        assert_eq!(url, format!("https://card.example.edu/pay?code={code}"));
        assert_eq!(normalise_code(&url).as_deref(), Some(code.as_str()));
        assert_eq!(
            normalise_code(&format!("{url}&from=camera#top")).as_deref(),
            Some(code.as_str())
        );
        assert_eq!(normalise_code(" abcd-efgh ").as_deref(), Some("ABCDEFGH"));
        // Look-alikes are not in the alphabet, and the length is exact.
        assert_eq!(normalise_code("ABCDEFG0"), None);
        assert_eq!(normalise_code("ABCDEFG"), None);
        assert_eq!(normalise_code("https://card.example.edu/pay?code="), None);
        assert_eq!(normalise_code(""), None);
    }
}
