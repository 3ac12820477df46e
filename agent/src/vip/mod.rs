//! The brain: what the VIPs are and how traffic should be split. Pure data and
//! decisions; nothing here touches the kernel.
//!
//! - [`table`]: [`VipTable`], the desired state (VIP → weighted backends).
//! - [`file`]: the static VIP file (`--vips FILE`), in the `/v1/vips` shape.
//! - [`slots`]: turns backend weights into uniform selection slots.
//! - [`named`]: named VIPs: DNS labels and address allocation.
//! - [`sanity`]: which addresses may be VIPs (not loopback, link-local, …).
//! - [`choose`]: power-of-two-choices backend choice (the NFQUEUE path).
pub mod choose;
pub mod file;
pub mod named;
pub mod sanity;
pub mod slots;
pub mod table;

pub use table::{Backend, Protocol, VipKey, VipTable, VipTableError};
