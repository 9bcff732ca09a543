-- llmtap PostgreSQL schema, version 4: one index fewer per call written.
--
-- `calls_time (started_us DESC, id DESC)` orders exactly as the primary key
-- `(started_us, id)` read backwards, which PostgreSQL does with the same index;
-- keeping both cost every inserted call an index entry for nothing.
DROP INDEX IF EXISTS calls_time;
