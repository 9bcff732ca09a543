//! llmtap: a transparent reverse proxy that records every LLM API call.
//!
//! Data flow: `server` (listener) → `route` → `forward` → `tee` → `capture` →
//! `writer` (`recorder` → `parse`, `cost`) → `store` → `api`. See ARCHITECTURE.md.

pub mod api;
pub mod capture;
pub mod config;
pub mod conn_guard;
pub mod cost;
pub mod dev;
pub mod forward;
pub mod headers;
pub mod ids;
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
