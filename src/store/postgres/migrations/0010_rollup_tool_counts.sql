-- Rollup cells count a tool's calls (HTTP, MCP tools/call) apart from the LLM calls, so
-- `/agents` reads its tool figures from the rollups instead of counting calls per
-- request. Cells of calls stored before are filled from the calls here, in the
-- scopes `index::scopes` names: all (`*`), `A<agent>`, and with a tenant
-- `T<tenant>` and `X<tenant>\x1f<agent>` (an unnamed agent is the empty name);
-- each call in its 15-minute bucket and in the all-time cell (bucket -1).
ALTER TABLE rollups
    ADD COLUMN tool_calls    bigint NOT NULL DEFAULT 0,
    ADD COLUMN tool_failures bigint NOT NULL DEFAULT 0;

INSERT INTO rollups AS r (scope, bucket_us, tool_calls, tool_failures)
SELECT s.scope, b.bucket_us, count(*), count(*) FILTER (WHERE c.status IS DISTINCT FROM 'success')
FROM calls c
CROSS JOIN LATERAL (VALUES (c.started_us - c.started_us % 900000000), (-1::bigint)) AS b(bucket_us)
CROSS JOIN LATERAL (
    SELECT '\x2a'::bytea AS scope
    UNION ALL SELECT 'A'::bytea || convert_to(coalesce(c.agent, ''), 'UTF8')
    UNION ALL SELECT 'T'::bytea || convert_to(c.tenant, 'UTF8') WHERE c.tenant IS NOT NULL
    UNION ALL SELECT 'X'::bytea || convert_to(c.tenant, 'UTF8') || '\x1f'::bytea
                     || convert_to(coalesce(c.agent, ''), 'UTF8') WHERE c.tenant IS NOT NULL
) AS s
-- A tool call is a tool HTTP call or an MCP tools/call the client sent
-- (`agent_loop::is_tool_step`): an MCP handshake or list is no tool call.
WHERE c.kind = 'http'
   OR (c.kind = 'mcp' AND c.record->'mcp'->>'method' = 'tools/call'
       AND coalesce(c.record->'mcp'->>'direction', '') <> 'server_to_client')
GROUP BY s.scope, b.bucket_us
ON CONFLICT (scope, bucket_us) DO UPDATE SET
    tool_calls = r.tool_calls + excluded.tool_calls,
    tool_failures = r.tool_failures + excluded.tool_failures;
