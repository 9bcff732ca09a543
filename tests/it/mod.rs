//! Integration tests: client → llmtap → mock upstream, all on 127.0.0.1.

mod chaos;
mod cost;
mod lifecycle;
mod process;
mod proxy;
mod replay;
mod secrets;
mod tls;
pub mod util;
