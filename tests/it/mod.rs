//! Integration tests: client → llmtap → mock upstream, all on 127.0.0.1.

mod api;
mod architecture;
mod chaos;
mod cost;
mod hostile;
mod lifecycle;
mod openapi;
mod otel;
mod process;
mod proxy;
pub mod recorded;
mod replay;
mod secrets;
mod storage;
mod tls;
pub mod util;
