-- llmtap PostgreSQL schema, version 3: prefix lookups of run and session ids.
--
-- A plain id asked for by a caller of the read API is also looked up as its
-- tenant-scoped forms (`id@tenant`, engine `tenant_scoped_ids`): a prefix match.
-- The primary keys use the database's collation, under which LIKE 'prefix%' cannot
-- use them unless it is "C"; these indexes serve it under any collation.
CREATE INDEX invocations_id_prefix ON invocations (id text_pattern_ops);
CREATE INDEX sessions_id_prefix ON sessions (id text_pattern_ops);
