//! The MCP tool server the MCP tests talk to, built on the official Rust SDK (`rmcp`):
//! served over streamable HTTP inside the tests (`it::mcp`) and over stdio by the
//! `mcp_test_server` example, which `llmtap mcp --` wraps.

use rmcp::{
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig},
    schemars,
    service::RequestContext,
    tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler,
};
use serde_json::json;
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

    /// Turns to the client mid-call (protocol 2025-11-25 and before): a log
    /// notification, then `roots/list`, `sampling/createMessage` and
    /// `elicitation/create`, each answered by the client.
    #[tool(description = "Asks the client for its roots, a sampled message and a name")]
    #[allow(deprecated)]
    async fn ask_client(&self, context: RequestContext<RoleServer>) -> Result<String, ErrorData> {
        fn failed(e: impl std::fmt::Display) -> ErrorData {
            ErrorData::internal_error(e.to_string(), None)
        }
        fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ErrorData> {
            serde_json::from_value(v).map_err(failed)
        }
        let peer = context.peer;
        peer.notify_logging_message(from(json!({"level": "info", "data": "asking the client"}))?)
            .await
            .map_err(failed)?;
        let roots = peer.list_roots().await.map_err(failed)?;
        let sampled = peer
            .create_message(from(json!({
                "messages": [{"role": "user", "content": {"type": "text", "text": "Say hi"}}],
                "maxTokens": 16
            }))?)
            .await
            .map_err(failed)?;
        let elicited = peer
            .create_elicitation(from(json!({
                "mode": "form",
                "message": "Your name?",
                "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}
            }))?)
            .await
            .map_err(failed)?;
        let name = elicited
            .content
            .as_ref()
            .and_then(|c| c.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or("nobody")
            .to_string();
        Ok(format!(
            "roots {} · model {} · name {name}",
            roots.roots.len(),
            sampled.model
        ))
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
