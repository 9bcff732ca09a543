-- llmtap PostgreSQL schema, version 6: calls per UTC day and pair of facet values.
--
-- Why: a call list's total for two facets at once (agent and status, tenant and
-- model) was a count(*) over the matches, 25-60 ms at a million calls and capped at
-- 10,000, where sled's facet cache answers any conjunction exactly. With the count
-- of each pair per day, a two-facet total is a sum over a few rows, and a longer
-- conjunction's matches are bounded by its rarest pair (lists.rs). The facets are
-- those of `call_facet_days` (migration 5, the same `llmtap_facet` keys), paired
-- when their tags differ, the facet with the lower tag character first (`a`); the
-- all-calls facet `t=` is not paired. The writer adds each batch's pairs in the
-- batch's transaction (`facets.rs`); retention deletes a dropped day's pairs.
CREATE TABLE call_facet_pair_days (
    a      text   NOT NULL,
    b      text   NOT NULL,
    day_us bigint NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (a, b, day_us)
);

-- What is stored already.
INSERT INTO call_facet_pair_days (a, b, day_us, n)
SELECT x.f, y.f, c.d, count(*)
FROM (
    SELECT c.started_us - c.started_us % 86400000000 AS d, ARRAY[
        llmtap_facet('a', c.agent),
        llmtap_facet('p', c.provider),
        llmtap_facet('m', c.model),
        CASE WHEN c.response_model IS DISTINCT FROM c.model THEN llmtap_facet('m', c.response_model) END,
        llmtap_facet('s', c.status),
        llmtap_facet('n', c.tenant),
        llmtap_facet('r', c.trigger),
        llmtap_facet('o', c.prompt),
        CASE WHEN c.session_id IS NULL THEN 'h=0' ELSE 'h=1' END
    ] AS fs
    FROM calls c
) AS c,
LATERAL unnest(c.fs) AS x(f),
LATERAL unnest(c.fs) AS y(f)
WHERE x.f IS NOT NULL AND y.f IS NOT NULL AND ascii(x.f) < ascii(y.f)
GROUP BY 1, 2, 3;
