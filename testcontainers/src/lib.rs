//! Real servers for tributary's tests: start a server on free loopback ports, wait until it
//! really serves, expose its URL, stop it when dropped.
//!
//! The fixtures arrive with the real-server work (issue 3); the installers they will drive are
//! in `scripts/peers/`. The local backend's tests need no server.
#![warn(missing_docs)]
