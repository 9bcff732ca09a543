//! llmtap: a transparent reverse proxy that records every LLM API call.
//!
//! Data flow: `server` (listener) → `route` → `forward` → `tee` → `capture` →
//! `writer` (`recorder` → `parse`, `cost`) → `store` → `api`. See ARCHITECTURE.md.

pub mod agent_loop;
pub mod api;
pub mod capture;
pub mod config;
pub mod conn_guard;
pub mod conn_limit;
pub mod cost;
pub mod credentials;
pub mod forward;
pub mod headers;
pub mod ids;
pub mod ingest;
pub mod intercept;
pub mod journal;
pub mod metrics;
pub mod otel;
pub mod parse;
pub mod record;
pub mod recorder;
pub mod route;
pub mod server;
pub mod store;
pub mod tee;
pub mod timefmt;
pub mod upstream;
pub mod writer;
pub mod zblock;

// The store's unit tests build records with the developer tools' generator, which
// names this crate `llmtap` as the binary and the integration tests do.
#[cfg(test)]
extern crate self as llmtap;

#[cfg(test)]
pub(crate) mod test_support;

/// The developer tools' record generator (a binary module), for the library's tests.
#[cfg(test)]
#[path = "devtools/synthetic.rs"]
#[allow(dead_code)]
pub(crate) mod dev;
