//! llmtap: a transparent reverse proxy that records every LLM API call.
//!
//! Data flow: `server` (listener) → `route` → `forward` → `tee` → `parse` →
//! `record` → `writer` → `store` → `api`. See ARCHITECTURE.md.

pub mod cost;
pub mod parse;
pub mod record;
pub mod timefmt;
