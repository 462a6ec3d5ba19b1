//! vantage: explains why long-lived TCP and WebSocket connections die, from captures taken at
//! several points of their path at once.
//!
//! The pipeline reads top to bottom, one module per stage, each with a plain data type at its
//! boundary:
//!
//! ```text
//! capture  (files -> Frame)            capture.rs
//! decode   (Frame -> Packet)           decode.rs
//! tcp      (Packet -> Connection)      tcp.rs
//! report   (Connection -> table, JSON) report.rs
//! ```
//!
//! `pipeline` drives the stages over one capture; `cli` is the command line.

pub mod align;
pub mod app;
pub mod capture;
pub mod cli;
pub mod decode;
pub mod diagnose;
pub mod extract;
#[cfg(feature = "libpcap")]
pub mod filter;
pub mod i18n;
#[cfg(feature = "libpcap")]
pub mod live;
pub mod pcapng_writer;
pub mod pipeline;
pub mod probe;
pub mod progress;
pub mod report;
pub mod tcp;
