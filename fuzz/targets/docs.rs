//! Clinical documents as they arrive: a ZIP goes to the XDM reader (safe unzip, METADATA.XML,
//! size and hash checks as warnings, then each listed C-CDA's header), anything else to the
//! C-CDA header reader. Checks: no panic, `is_ccda` agrees with what `read_header` accepts,
//! a package `read` accepts is one `is_xdm` recognises, and a warning never quotes content.

use switchboard_docs::{ccda, xdm};

fn header(bytes: &[u8]) {
    if let Ok(header) = ccda::read_header(bytes) {
        assert!(
            ccda::is_ccda(bytes),
            "read a header from what is_ccda refused"
        );
        // An SSN never shows in Debug.
        for id in header.patient.ids.iter().filter(|id| id.is_ssn()) {
            if let Some(extension) = id.extension.as_deref() {
                let shown = format!("{id:?}");
                assert!(!shown.contains(&format!("{extension:?}")), "SSN in Debug");
            }
        }
    }
}

/// Checks one input (called by libFuzzer and by the seed replay in `tests/fuzz_seeds.rs`).
pub fn run(data: &[u8]) {
    if xdm::is_zip(data) {
        let limits = xdm::Limits {
            max_entries: 64,
            max_entry_bytes: 1024 * 1024,
            max_total_bytes: 4 * 1024 * 1024,
            max_ratio: 200,
        };
        if let Ok(package) = xdm::read(data, limits) {
            assert!(
                xdm::is_xdm(data),
                "read a package is_xdm does not recognise"
            );
            for warning in &package.warnings {
                assert!(warning.to_string().starts_with("xdm: "));
            }
            for document in &package.documents {
                header(&document.bytes);
            }
        }
    } else {
        header(data);
    }
}
