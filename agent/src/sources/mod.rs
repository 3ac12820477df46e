//! Where backends come from, each source yielding a [`SourceTable`]:
//!
//! - [`file`]: the static VIP file (`--vips FILE`).
//! - [`mesos`]: a Mesos agent or master `/state` document, read the way DC/OS
//!   Minuteman did (pure parser).
//! - [`fetch`]: getting a document from an `http://` or `file://` URL.
//! - [`host`]: this host's own addresses (no VIP may take one).
//! - [`merge`]: sources → one [`crate::vip::VipTable`], resolving named VIPs,
//!   with the grace period for failing sources (pure).
pub mod fetch;
pub mod file;
pub mod host;
pub mod merge;
pub mod mesos;

use std::net::SocketAddr;

use crate::vip::{Backend, Protocol};

/// How a source names a VIP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VipRef {
    /// An address VIP; `name` is a DNS name given with it (the VIP file's
    /// named entries carry their address).
    Ip {
        addr: SocketAddr,
        name: Option<String>,
    },
    /// A named VIP (`/name:port` label) of a framework; the address is
    /// allocated by the agent.
    Named {
        name: String,
        framework: String,
        port: u16,
    },
}

/// One VIP as a source sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceVip {
    pub vip: VipRef,
    pub protocol: Protocol,
    pub backends: Vec<Backend>,
    /// Where in its source the VIP is declared, for errors: the Mesos tasks
    /// and labels, the VIP file, the control's revision.
    pub origin: Vec<String>,
}

/// Everything one source currently declares.
pub type SourceTable = Vec<SourceVip>;
