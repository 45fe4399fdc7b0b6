//! keyrot: a policy-as-code rotation engine for API keys.
//!
//! A store is a git repository of key metadata (`keys/*.toml`), owners, settings and
//! Rhai policies. keyrot evaluates every key against every policy ([`policy`]), turns
//! the decisions into a deterministic [`plan::Plan`], and applies it ([`apply`]) with
//! new secrets from the OS CSPRNG ([`secret`]) as one git commit, so the history is the
//! audit trail ([`audit`]). The library never prints; the `cli` module renders.

// System calls go through `rustix` and memory wiping through `zeroize`; the binary's
// allocator tuning (`main.rs`) is the only `unsafe` left, outside the library.
#![forbid(unsafe_code)]

pub(crate) mod apply;
pub(crate) mod audit;
pub mod cli;
pub(crate) mod digest;
pub(crate) mod direct_commit;
pub(crate) mod durable;
pub mod error;
pub(crate) mod explain;
pub(crate) mod failpoint;
pub mod init;
pub(crate) mod key_edit;
pub(crate) mod lint;
pub(crate) mod maintenance;
pub(crate) mod notify;
pub(crate) mod owner;
pub(crate) mod parallel;
pub(crate) mod plan;
pub(crate) mod plan_line;
pub mod policy;
pub(crate) mod progress;
pub(crate) mod provider;
pub(crate) mod remote;
pub(crate) mod report;
pub(crate) mod runner;
pub(crate) mod scan;
pub(crate) mod secret;
pub(crate) mod signing;
pub(crate) mod sink;
pub(crate) mod state_file;
pub mod store;
pub(crate) mod term;
pub mod time;
pub(crate) mod trailers;
pub(crate) mod usage;
pub(crate) mod watch;
pub(crate) mod workspace;

pub use error::{Error, Problem, Result};
