//! Integration tests: the real `keyrot` binary against real git repositories in
//! temporary folders. One binary, one module per area.

// Tests, benchmarks and measuring tools fail loudly on purpose: `unwrap` is their
// assert. They have no public surface, so `pub` in their modules is only for siblings.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod apply;
mod architecture;
mod audit;
mod bench_tools;
mod check;
mod common;
mod crash_safety;
mod exceptions;
mod explain;
mod folders;
mod hostile;
mod init_demo;
mod log;
mod maintenance;
mod notify;
mod plan;
mod policy_tests;
#[cfg(feature = "postgres")]
mod postgres;
mod providers;
mod remote;
mod report;
mod rollout;
mod run;
mod saved_plans;
mod scan;
mod schemas;
mod servers;
mod services;
mod shipped_policies;
mod terminal;
mod usage;
mod vault;
mod watch;
