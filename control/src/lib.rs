//! garrison-control: the thin control plane.
//!
//! Planned rooms (see docs/architecture.md; each arrives with its issue):
//! - `resources`, `sorter`, `allocator`: hierarchical DRF as the Mesos master does;
//! - `apps`: Marathon-style app bookkeeping;
//! - `dns`: Mesos-DNS-style records and server.
//!
//! Today the crate only carries its identity; nothing here is wired to the agent yet.

/// Name and version of this build, as printed by `garrison-control --version`.
pub fn version() -> String {
    format!("garrison-control {}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_names_the_binary() {
        assert!(super::version().starts_with("garrison-control 0."));
    }
}
