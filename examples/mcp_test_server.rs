//! A stdio MCP server (the official Rust SDK, `rmcp`) for the tests of `llmtap mcp --`:
//! the same tools `it::mcp` serves over HTTP.

#[path = "../tests/it/mcp_tools.rs"]
mod mcp_tools;

use rmcp::ServiceExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    eprintln!("mcp_test_server: ready");
    let service = mcp_tools::TestTools::new()
        .serve(rmcp::transport::stdio())
        .await?;
    service.waiting().await?;
    Ok(())
}
