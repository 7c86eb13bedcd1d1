//! Daemon logs written to a file (or journald) carry no ANSI colour codes: both daemons colour
//! only when stderr is a terminal.

use minitorr_e2e::*;

#[test]
fn daemon_logs_to_a_file_have_no_colour_codes() {
    // NO_COLOR would hide the bug; the daemons must decide from stderr alone. This test binary
    // runs only this test, so changing its environment affects nothing else.
    std::env::remove_var("NO_COLOR");
    let dir = tempfile::tempdir().unwrap();
    // Start both daemons and make them log a little (start-up, login, a group).
    let (tracker, alice, _bob) = alice_and_bob_in_g1(dir.path());
    let tlog = tracker.log();
    let dlog = std::fs::read_to_string(alice.dir.join("minitorrd.log")).unwrap();
    for (name, log) in [("trackerd", &tlog), ("minitorrd", &dlog)] {
        assert!(
            log.lines().count() >= 2,
            "{name} logged almost nothing:\n{log}"
        );
        assert!(
            !log.contains('\x1b'),
            "{name} wrote ANSI escape codes into its log file:\n{log}"
        );
    }
}
