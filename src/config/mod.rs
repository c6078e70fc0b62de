//! The Galley role: read Istio YAML, validate it, keep the last good version
//! of every file, and publish config snapshots.

pub mod analyze;
pub mod parse;
pub mod store;
pub mod validate;
pub mod watch;
pub mod webhook;

pub use parse::{ConfigError, parse_file};
pub use store::{ConfigState, Store};
