//! Where backends come from. Today: the static VIP file ([`file::FileSource`]).
pub mod file;
