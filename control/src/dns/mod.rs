//! Mesos-DNS-style names (the start of the control's DNS: issue 9).
//!
//! - [`labels`]: turning task and framework names into DNS labels and domain
//!   fragments under RFC 1123 (Mesos-DNS's default) or RFC 952 rules.
pub mod labels;
