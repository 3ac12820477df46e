//! Library target of the kernel-program package. It holds nothing: it exists so
//! `garrison-agent` can name this package as a build dependency and be rebuilt
//! when it changes. The programs are the `garrison` binary (src/main.rs).
#![no_std]
