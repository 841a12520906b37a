//! Patient identifiers that are Social Security numbers: usable for matching, never kept in
//! clear. A US SSN is recognised by its authority — the Social Security Administration's OID
//! (`2.16.840.1.113883.4.1`), or an HL7 v2 assigning authority or identifier type naming it
//! (`SSA`, `SS`, `SSN`) — and is stored and compared only as a keyed digest
//! (`crypto::Keyring::identifier_digests`), whose form this module names.

/// The Social Security Administration's OID.
pub const SSN_OID: &str = "2.16.840.1.113883.4.1";

/// How a digested identifier value starts (`ssn-hmac:` + 64 hex digits).
pub const DIGEST_PREFIX: &str = "ssn-hmac:";

/// Whether an identifier issued by `authority` (with HL7 identifier type `id_type`) is an SSN.
pub fn is_ssn(authority: &str, id_type: Option<&str>) -> bool {
    let authority = authority.trim();
    authority == SSN_OID
        || ["SSA", "SS", "SSN"]
            .iter()
            .any(|a| authority.eq_ignore_ascii_case(a))
        || id_type.is_some_and(|t| {
            let t = t.trim();
            t.eq_ignore_ascii_case("SS") || t.eq_ignore_ascii_case("SSN")
        })
}

/// The form an SSN is digested in: its digits only (`123-45-6789` and `123456789` are one).
pub fn normalized_ssn(value: &str) -> String {
    value.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssns_are_known_by_their_authority_or_type() {
        assert!(is_ssn(SSN_OID, None));
        assert!(is_ssn("ssa", None));
        assert!(is_ssn("HOSP", Some("SS")));
        assert!(!is_ssn("HOSP", Some("MR")));
        assert!(!is_ssn("2.16.840.1.113883.19.5", None));
        assert_eq!(normalized_ssn(" 123-45-6789 "), "123456789");
    }
}
