-- llmtap PostgreSQL schema, version 8: the models of each session.
--
-- Why: the session list filters by model (`GET /api/v1/sessions?model=`, issue 34),
-- and a session row kept no model. Each batch adds the models of a session's LLM
-- calls (requested and answering, in order of first use, at most 16: index.rs
-- `SessionSummary::add_call`, the rule sled keeps); existing sessions get theirs
-- from their stored LLM calls here, so every session row has its list.
ALTER TABLE sessions ADD COLUMN models text[] NOT NULL DEFAULT '{}';

UPDATE sessions AS s SET models = k.models
FROM (
    SELECT session_id, array_agg(m ORDER BY first_us) AS models
    FROM (
        SELECT session_id, m, min(started_us) AS first_us
        FROM calls, LATERAL unnest(ARRAY[model, response_model]) AS m
        WHERE session_id IS NOT NULL AND m IS NOT NULL AND kind NOT IN ('http', 'mcp')
        GROUP BY session_id, m
    ) AS firsts
    GROUP BY session_id
) AS k
WHERE s.id = k.session_id;

CREATE INDEX sessions_agent ON sessions (agent, first_us DESC, id DESC) WHERE agent IS NOT NULL;
