//! Integration tests: client → llmtap → mock upstream, all on 127.0.0.1.

mod lifecycle;
mod proxy;
mod replay;
mod secrets;
mod tls;
pub mod util;
