//! Marathon's bookkeeping, done by the control.
//!
//! - [`app`]: app definitions (the supported subset), defaults, validation.
//! - [`env`](mod@env): the environment a task gets (`PORT0`, `HOST`, `MARATHON_APP_ID`, …).
//! - [`placement`]: where new instances go, from the DRF allocator's offers.
//! - [`autoscale`]: the marathon-lb-autoscale rule.
//! - [`timestamp`]: Marathon's ISO-8601 timestamps.
pub mod app;
pub mod autoscale;
pub mod env;
pub mod placement;
pub mod timestamp;
