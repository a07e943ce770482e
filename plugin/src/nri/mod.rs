//! containerd's Node Resource Interface, plugin side: generated protocol types,
//! the socket multiplexer, and the plugin that turns runtime events into limits.

/// Types and services generated at build time from `plugin/proto/nri.proto`.
#[allow(
    clippy::all,
    unused_mut,
    non_upper_case_globals,
    unused_qualifications,
    unused_imports,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    unreachable_pub,
    missing_docs,
    renamed_and_removed_lints,
    unknown_lints
)]
pub mod proto {
    pub mod nri {
        include!(concat!(env!("OUT_DIR"), "/nri.rs"));
    }
    pub mod nri_ttrpc {
        include!(concat!(env!("OUT_DIR"), "/nri_ttrpc.rs"));
    }
}

pub mod backend;
pub mod config;
pub mod connection;
pub mod handler;
pub mod mux;
pub mod service;
