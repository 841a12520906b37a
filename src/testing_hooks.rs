//! Crash points for the tests that kill the daemon at an exact place (debug builds only; a
//! release build compiles them to nothing). `SB_TEST_KILL_AT=<name>` makes the process
//! `SIGKILL` itself when it reaches the point of that name, as `kill -9` there would.
//!
//! Points: `direct-recorded` (an inbound Direct message is recorded and processed, its mailbox
//! message not yet flagged `\Seen`); `provider-answered` (a connector answered a send
//! attempt, its outcome not yet recorded: the delivery is left `sending`, in doubt);
//! `report-applied` (a provider's status callback is applied to its delivery, the provider not
//! yet answered); `campaign-accepted` (a campaign's message is accepted, its attempt not yet
//! recorded).

/// Kills the process here if `SB_TEST_KILL_AT` names this point (debug builds).
#[inline]
pub fn kill_point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("SB_TEST_KILL_AT").is_ok_and(|at| at == name) {
        // SAFETY: kill(2) on our own pid with SIGKILL; nothing else is touched.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
