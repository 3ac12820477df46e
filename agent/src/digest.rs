//! The one stable digest, shared with the control (see [`garrison_proto::digest`]).
pub use garrison_proto::digest::*;
