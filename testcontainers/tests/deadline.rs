//! A test that hangs on purpose, for `scripts/test`'s self-test of the deadline: run under the
//! `deadline-selftest` profile of `.config/nextest.toml` it must be ended at its 3 s deadline,
//! reported by name, with the last lines of its server's log. It is ignored, so no normal run
//! includes it.

use tributary_testcontainers::{Peer, require_peer};

#[test]
#[ignore = "hangs on purpose: scripts/test --self-test runs it to prove the per-test deadline"]
fn hangs_past_its_deadline_while_holding_a_server() {
    let server = require_peer!(Peer::EventHubs);
    println!("holding {} and hanging", server.url());
    loop {
        std::thread::park();
    }
}
