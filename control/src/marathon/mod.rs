//! Marathon's bookkeeping, done by the control.
//!
//! - [`app`]: app definitions (the supported subset), defaults, validation.
//! - [`placement`]: where new instances go, from the DRF allocator's offers.
pub mod app;
pub mod placement;
