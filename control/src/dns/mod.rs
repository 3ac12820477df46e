//! Mesos-DNS-style names.
//!
//! - [`labels`]: turning task and framework names into DNS labels and domain
//!   fragments under RFC 1123 (Mesos-DNS's default) or RFC 952 rules.
//! - [`state`]: the parts of a Mesos master state records come from, and a
//!   task's IP sources (netinfo, docker, mesos, host).
//! - [`records`]: the record generator (A, AAAA, SRV) from a master state.
//! - [`answer`]: answering a DNS query from the records (wire format in and out).
//! - [`client`]: a minimal A-query client (tests, demo, benchmarks).
pub mod answer;
pub mod client;
pub mod labels;
pub mod records;
pub mod state;
