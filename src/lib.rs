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

pub mod apply;
pub mod audit;
pub mod cli;
pub mod digest;
pub mod durable;
pub mod error;
pub mod explain;
pub mod failpoint;
pub mod init;
pub mod lint;
pub mod parallel;
pub mod plan;
pub mod plan_line;
pub mod policy;
pub mod progress;
pub mod provider;
pub mod runner;
pub mod secret;
pub mod sink;
pub mod state_file;
pub mod store;
pub mod term;
pub mod time;
pub mod watch;
pub mod workspace;

pub use error::{Error, Problem, Result};
