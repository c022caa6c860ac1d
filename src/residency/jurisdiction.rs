//! Jurisdictions and what they contain: `EU` is the union of its member states, every other
//! code is one country.

/// ISO 3166-1 alpha-2 codes of the EU member states (GDPR applies to all of them).
pub const EU_MEMBER_STATES: [&str; 27] = [
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// Whether data processed in `inner` stays within `outer`: equal codes, or a member state
/// inside `EU`. Greece is accepted as both GR (ISO) and EL (EU usage).
pub fn is_within(inner: &str, outer: &str) -> bool {
    inner == outer || (outer == "EU" && (EU_MEMBER_STATES.contains(&inner) || inner == "EL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_states_are_within_the_eu_and_nothing_else_is() {
        assert!(is_within("FR", "EU"));
        assert!(is_within("EU", "EU"));
        assert!(is_within("IN", "IN"));
        assert!(!is_within("EU", "FR"), "the EU is not within France");
        assert!(!is_within("US", "EU"));
        assert!(!is_within("CH", "EU"));
        assert!(!is_within("GB", "EU"));
    }
}
