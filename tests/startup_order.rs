//! `benches/startup.order`, the list of functions a release build gathers ahead of the rest of
//! its code (build.rs makes a linker script of it; `benches/startup-order.sh` regenerates it).
//! A name that matches nothing is skipped without a word, so a list broken by a failed
//! regeneration (empty, or callgrind's addresses and headers instead of symbols) would quietly
//! give back the resident memory it saves: about 15 MB of the daemon's at rest.

use std::collections::HashSet;

#[test]
fn the_startup_order_lists_thousands_of_distinct_symbols() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/startup.order");
    let text = std::fs::read_to_string(path).expect("benches/startup.order");
    let names: Vec<&str> = text.lines().collect();
    assert!(
        names.len() >= 2_000,
        "only {} names: regenerate it with benches/startup-order.sh",
        names.len()
    );
    let symbol = |name: &str| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_$.".contains(c))
    };
    let bad: Vec<&&str> = names.iter().filter(|name| !symbol(name)).take(5).collect();
    assert!(bad.is_empty(), "not symbol names: {bad:?}");
    let distinct: HashSet<&&str> = names.iter().collect();
    assert_eq!(distinct.len(), names.len(), "a name listed twice");
    // The daemon's own code is in it, not only the runtime's.
    assert!(
        names.iter().any(|name| name.contains("switchboard")),
        "none of the daemon's own functions"
    );
}
