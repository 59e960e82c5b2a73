//! The tributary bridge: replication routes between any two backends, and the pieces of the
//! `tributary` command line that are worth testing on their own.
#![warn(missing_docs)]

pub mod backends;
pub mod cloudevents;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod json;
pub mod metrics;
pub mod route;
pub mod telemetry;
pub mod transform;
