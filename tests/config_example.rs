//! The shipped example configuration parses, and says what the defaults are.

#[test]
fn example_config_parses_and_matches_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/switchboard.toml");
    let text = std::fs::read_to_string(path).expect("example config");
    let example = switchboard::config::Config::from_toml(&text).expect("example parses");
    let defaults = switchboard::config::Config::from_toml("").expect("defaults");
    assert_eq!(example.server.listen, defaults.server.listen);
    assert_eq!(example.queue.lease_secs, defaults.queue.lease_secs);
    assert_eq!(example.database_url(), defaults.database_url());
    assert_eq!(
        example.channel("sms").max_attempts,
        defaults.channel("sms").max_attempts
    );
}
