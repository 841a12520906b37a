//! Clinical documents as they arrive: a ZIP goes to the XDM reader (safe unzip, METADATA.XML,
//! size and hash checks, then each listed C-CDA's header), anything else to the C-CDA header
//! reader. Checks: no panic, and `is_ccda` agrees with what `read_header` accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_docs::{ccda, xdm};

fn header(bytes: &[u8]) {
    if ccda::read_header(bytes).is_ok() {
        assert!(ccda::is_ccda(bytes), "read a header from what is_ccda refused");
    }
}

fuzz_target!(|data: &[u8]| {
    if xdm::is_zip(data) {
        let limits = xdm::Limits {
            max_entries: 64,
            max_entry_bytes: 1024 * 1024,
            max_total_bytes: 4 * 1024 * 1024,
        };
        if let Ok(package) = xdm::read(data, limits) {
            for document in &package.documents {
                header(&document.bytes);
            }
        }
    } else {
        header(data);
    }
});
