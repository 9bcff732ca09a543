//! The MCP tool server the MCP tests talk to, built on the official Rust SDK (`rmcp`):
//! served over streamable HTTP inside the tests (`it::mcp`) and over stdio by the
//! `mcp_test_server` example, which `llmtap mcp --` wraps.

use rmcp::{
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig},
    schemars, tool, tool_handler, tool_router, ErrorData, ServerHandler,
};
use std::time::Duration;

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct AddRequest {
    pub a: i64,
    pub b: i64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct SleepRequest {
    pub ms: u64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
pub struct CityRequest {
    pub city: String,
}

#[derive(Debug, Clone)]
pub struct TestTools {
    #[allow(dead_code)]
    tool_router: ToolRouter<Self>,
}

impl TestTools {
    pub fn new() -> Self {
        TestTools {
            tool_router: Self::tool_router(),
        }
    }
}

impl Default for TestTools {
    fn default() -> Self {
        Self::new()
    }
}

#[tool_router]
impl TestTools {
    #[tool(description = "Adds two integers")]
    fn add(&self, Parameters(AddRequest { a, b }): Parameters<AddRequest>) -> String {
        (a + b).to_string()
    }

    #[tool(description = "Always fails: answers isError true")]
    fn fail(&self) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text("disk full")])
    }

    #[tool(description = "Refuses with a JSON-RPC error")]
    fn reject(&self) -> Result<CallToolResult, ErrorData> {
        Err(ErrorData::invalid_params("rejected on purpose", None))
    }

    #[tool(description = "Sleeps for ms milliseconds")]
    async fn sleep(&self, Parameters(SleepRequest { ms }): Parameters<SleepRequest>) -> String {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        format!("slept {ms} ms")
    }

    #[tool(description = "The weather in a city")]
    fn weather(&self, Parameters(CityRequest { city }): Parameters<CityRequest>) -> String {
        format!("sunny in {city}")
    }

    #[tool(description = "The local time in a city")]
    fn time(&self, Parameters(CityRequest { city }): Parameters<CityRequest>) -> String {
        format!("12:00 in {city}")
    }
}

#[tool_handler]
impl ServerHandler for TestTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}
