//! Named VIPs: DNS names and addresses, shared with the control (see
//! [`garrison_proto::named`]; the control is the authority when an agent
//! follows one, the agent allocates itself otherwise).
pub use garrison_proto::named::*;
