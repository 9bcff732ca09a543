//! Integration tests: client → llmtap → mock upstream, all on 127.0.0.1.

mod agent_loop;
mod api;
mod architecture;
mod capture_log;
mod chaos;
mod cli;
mod conformance;
mod cost;
mod hostile;
mod intercept;
mod lifecycle;
mod limits;
pub mod mcp;
mod mcp_page;
pub mod mcp_tools;
mod openapi;
mod otel;
mod page;
mod page_details;
mod page_live;
pub mod pg;
mod postgres;
mod process;
mod proxy;
pub mod recorded;
mod replay;
mod scale_out;
mod screenshots;
mod secrets;
mod storage;
#[path = "../../src/devtools/synthetic.rs"]
#[allow(dead_code)]
pub mod synthetic;
mod tls;
mod upgrade;
pub mod util;
mod webdriver;
