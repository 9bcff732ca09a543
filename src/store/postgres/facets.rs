//! Calls per UTC day and facet value (`call_facet_days`, migration 0005): what the
//! call lists read to find from which day on a page's matches lie, and a one-facet
//! filter's exact total.
//!
//! The writer adds each batch's counts in the batch's transaction (`add`), so the
//! counts and the calls commit together; `delete_call` takes its call off them
//! (`subtract`), and retention deletes a dropped day's counts with its partitions
//! (`drop_before`). The facets are those sled's facet cache
//! counts (`index::is_paired`), read from the call's list summary (the plan's,
//! `plan::Listed`), plus `t=` for every call, so a time window alone has counts too.

use super::PgError;
use crate::store::index::{self, DAY_US};
use crate::store::summary::{tag, CallSummary, Filter};
use std::collections::{BTreeMap, HashMap};
use tokio_postgres::GenericClient;

/// Values longer than this (bytes) are counted by their SHA-256 (migration 0005).
const LONGEST_PLAIN: usize = 200;

/// Rows per upsert statement (three parameters each).
const ROWS_PER_STATEMENT: usize = 5000;

/// The facet every call carries.
const ALL: &str = "t=";

/// A facet as `call_facet_days` keys it; the same rule as the migration's
/// `llmtap_facet`.
pub fn facet(t: u8, value: &str) -> String {
    let value = super::text::clean(value);
    if value.len() <= LONGEST_PLAIN {
        format!("{}={value}", char::from(t))
    } else {
        let digest = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("{}#{hex}", char::from(t))
    }
}

/// The facets one call counts under, once each, from its list summary (whose
/// `model` is the requested model, else the answering one: with `response_model`,
/// both models of the call).
pub fn of_call(call: &CallSummary) -> Vec<String> {
    let mut out = vec![ALL.to_string()];
    let mut push = |t: u8, v: Option<&str>| {
        if let Some(v) = v {
            out.push(facet(t, v));
        }
    };
    push(tag::AGENT, call.agent.as_deref());
    push(tag::PROVIDER, Some(&call.provider));
    push(tag::MODEL, call.model.as_deref());
    push(tag::MODEL, call.response_model.as_deref());
    push(tag::STATUS, call.status.map(|s| s.as_str()));
    push(tag::TENANT, call.tenant.as_deref());
    push(tag::TRIGGER, call.trigger.as_deref());
    push(tag::PROMPT, call.prompt.as_deref());
    out.push(facet(
        tag::HAS_SESSION,
        &String::from_utf8_lossy(index::has_session_value(call.session_id.is_some())),
    ));
    out.sort_unstable();
    out.dedup();
    out
}

/// Adds the calls (the ones a batch inserted) to their days' counts.
pub async fn add(client: &impl GenericClient, calls: &[&CallSummary]) -> Result<(), PgError> {
    apply(client, calls, 1).await
}

/// Takes deleted calls off their days' counts.
pub async fn subtract(client: &impl GenericClient, calls: &[&CallSummary]) -> Result<(), PgError> {
    apply(client, calls, -1).await
}

/// Adds `sign` per call to each of its counts, in key order (two instances'
/// batches lock shared rows in one order).
async fn apply(
    client: &impl GenericClient,
    calls: &[&CallSummary],
    sign: i64,
) -> Result<(), PgError> {
    let mut counts: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let mut pairs: BTreeMap<(String, String, i64), i64> = BTreeMap::new();
    for call in calls {
        let day = call.started_at_us - call.started_at_us % DAY_US;
        let day = i64::try_from(day).unwrap_or(i64::MAX);
        let facets = of_call(call);
        for (a, b) in pairs_of(&facets) {
            *pairs
                .entry((a.to_string(), b.to_string(), day))
                .or_default() += sign;
        }
        for f in facets {
            *counts.entry((f, day)).or_default() += sign;
        }
    }
    upsert_singles(client, counts).await?;
    let rows: Vec<_> = pairs.into_iter().collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let a: Vec<&str> = chunk.iter().map(|((a, _, _), _)| a.as_str()).collect();
        let b: Vec<&str> = chunk.iter().map(|((_, b, _), _)| b.as_str()).collect();
        let days: Vec<i64> = chunk.iter().map(|((_, _, d), _)| *d).collect();
        let ns: Vec<i64> = chunk.iter().map(|(_, n)| *n).collect();
        client
            .execute(
                "INSERT INTO call_facet_pair_days AS c (a, b, day_us, n) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) \
                 ON CONFLICT (a, b, day_us) DO UPDATE SET n = c.n + excluded.n",
                &[&a, &b, &days, &ns],
            )
            .await?;
    }
    Ok(())
}

/// The pairs of a call's facets that `call_facet_pair_days` counts: tags differ,
/// the lower tag first, the all-calls facet left out (migration 6).
pub fn pairs_of(facets: &[String]) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    for (i, x) in facets.iter().enumerate() {
        for y in &facets[i + 1..] {
            let (tx, ty) = (x.as_bytes()[0], y.as_bytes()[0]);
            if tx == tag::ALL || ty == tag::ALL || tx == ty {
                continue;
            }
            out.push(if tx < ty {
                (x.as_str(), y.as_str())
            } else {
                (y.as_str(), x.as_str())
            });
        }
    }
    out
}

async fn upsert_singles(
    client: &impl GenericClient,
    counts: BTreeMap<(String, i64), i64>,
) -> Result<(), PgError> {
    let rows: Vec<_> = counts.into_iter().collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let facets: Vec<&str> = chunk.iter().map(|((f, _), _)| f.as_str()).collect();
        let days: Vec<i64> = chunk.iter().map(|((_, d), _)| *d).collect();
        let ns: Vec<i64> = chunk.iter().map(|(_, n)| *n).collect();
        client
            .execute(
                "INSERT INTO call_facet_days AS c (facet, day_us, n) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
                 ON CONFLICT (facet, day_us) DO UPDATE SET n = c.n + excluded.n",
                &[&facets, &days, &ns],
            )
            .await?;
    }
    Ok(())
}

/// Deletes the counts of the days before `day_end` (a day boundary), whose
/// partitions retention dropped.
pub async fn drop_before(client: &impl GenericClient, day_end: i64) -> Result<(), PgError> {
    for table in ["call_facet_days", "call_facet_pair_days"] {
        client
            .execute(
                &format!("DELETE FROM {table} WHERE day_us < $1"),
                &[&day_end],
            )
            .await?;
    }
    Ok(())
}

/// What the counts say about a filter's matches, per day.
#[derive(Debug, Clone, Default)]
pub struct Days {
    /// (day start, matches), newest day first. Days the filter's window cuts count
    /// whole.
    pub days: Vec<(u64, u64)>,
    /// Whether `days` are the matches (else at least as many as the matches).
    pub exact: bool,
}

/// The facet groups a filter ANDs, each (tag, the facets its values OR); all calls
/// when it names none. What the counts do not hold (text, cost, properties, users,
/// sessions, tasks, keys, kinds) only narrows the matches, so the counts of the
/// rest still bound them from above.
struct Groups {
    groups: Vec<(u8, Vec<String>)>,
    /// Nothing but counted facets and a window.
    counted_only: bool,
    /// A facet a call may carry twice (requested and answering model) is ORed over
    /// several values: a sum of their counts may count a call twice.
    overlapping: bool,
}

fn groups(filter: &Filter) -> Groups {
    let mut counted_only =
        filter.text.is_none() && filter.min_cost_pusd.is_none() && filter.properties.is_empty();
    let mut overlapping = false;
    let mut groups = Vec::new();
    if let Some(want) = filter.has_session {
        groups.push((
            tag::HAS_SESSION,
            vec![facet(
                tag::HAS_SESSION,
                &String::from_utf8_lossy(index::has_session_value(want)),
            )],
        ));
    }
    for (t, values) in &filter.eq {
        if !index::is_paired(*t) {
            counted_only = false;
            continue;
        }
        if *t == tag::MODEL && values.len() > 1 {
            overlapping = true;
        }
        groups.push((*t, values.iter().map(|v| facet(*t, v)).collect()));
    }
    if groups.is_empty() {
        groups.push((tag::ALL, vec![ALL.to_string()]));
    }
    let mut tags: Vec<u8> = groups.iter().map(|g| g.0).collect();
    tags.sort_unstable();
    tags.dedup();
    // One tag named twice: the pair counts cannot say (a pair has two tags).
    overlapping |= tags.len() < groups.len();
    Groups {
        groups,
        counted_only,
        overlapping,
    }
}

/// Whether the filter names only facets sled's facet cache counts (and a window),
/// whose totals it answers exactly at any size.
pub fn counted_only(filter: &Filter) -> bool {
    groups(filter).counted_only
}

impl Groups {
    /// Whether the per-day counts are the matches: one or two groups of counted
    /// facets and nothing else, no call counted twice.
    fn exact(&self) -> bool {
        self.counted_only && !self.overlapping && self.groups.len() <= 2
    }
}

/// The filter's matches per day, by the counts: exact for one or two counted
/// facets (`Groups::exact`), else an upper bound (each day's fewest over the
/// facets and pairs of facets ANDed).
pub async fn days(client: &impl GenericClient, filter: &Filter) -> Result<Days, PgError> {
    let g = groups(filter);
    let all: Vec<&str> = g
        .groups
        .iter()
        .flat_map(|(_, v)| v)
        .map(String::as_str)
        .collect();
    let from = filter
        .from_us
        .map(|f| to_i64(f - f % DAY_US))
        .unwrap_or(i64::MIN);
    let to = filter.to_us.map(to_i64).unwrap_or(i64::MAX);
    let rows = client
        .query(
            "SELECT facet, day_us, n FROM call_facet_days \
             WHERE facet = ANY($1) AND day_us >= $2 AND day_us < $3",
            &[&all, &from, &to],
        )
        .await?;
    let mut per: HashMap<(&str, u64), u64> = HashMap::new();
    let mut day_set = std::collections::BTreeSet::new();
    for row in &rows {
        let (f, d, n): (&str, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let d = d.max(0) as u64;
        per.insert((f, d), n.max(0) as u64);
        day_set.insert(d);
    }
    let pair_rows = if g.groups.len() >= 2 {
        client
            .query(
                "SELECT a, b, day_us, n FROM call_facet_pair_days \
                 WHERE a = ANY($1) AND b = ANY($1) AND day_us >= $2 AND day_us < $3",
                &[&all, &from, &to],
            )
            .await?
    } else {
        Vec::new()
    };
    let mut pairs: HashMap<(&str, &str, u64), u64> = HashMap::new();
    for row in &pair_rows {
        let (a, b, d, n): (&str, &str, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
        pairs.insert((a, b, d.max(0) as u64), n.max(0) as u64);
    }
    let mut days = Vec::new();
    for d in day_set.into_iter().rev() {
        let single = |(_, facets): &(u8, Vec<String>)| {
            facets
                .iter()
                .map(|f| per.get(&(f.as_str(), d)).copied().unwrap_or(0))
                .fold(0u64, u64::saturating_add)
        };
        let mut n = g.groups.iter().map(single).min().unwrap_or(0);
        for (i, (tx, xs)) in g.groups.iter().enumerate() {
            for (ty, ys) in &g.groups[i + 1..] {
                if tx == ty {
                    continue;
                }
                let mut sum = 0u64;
                for x in xs {
                    for y in ys {
                        let key = if tx < ty {
                            (x.as_str(), y.as_str(), d)
                        } else {
                            (y.as_str(), x.as_str(), d)
                        };
                        sum = sum.saturating_add(pairs.get(&key).copied().unwrap_or(0));
                    }
                }
                n = n.min(sum);
            }
        }
        if n > 0 {
            days.push((d, n));
        }
    }
    Ok(Days {
        days,
        exact: g.exact(),
    })
}

impl Days {
    /// The end of the newest day with a match: no match started later.
    pub fn end(&self) -> Option<u64> {
        self.days.first().map(|(d, _)| d + DAY_US)
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CallRecord, CallStatus, Metadata};

    #[test]
    fn a_call_counts_under_every_paired_tag_and_all_calls_once_each() {
        let call = CallRecord {
            provider: "openai".into(),
            model: Some("gpt-4o".into()),
            response_model: Some("gpt-4o".into()),
            status: Some(CallStatus::Failed),
            metadata: Metadata {
                agent: Some("bot".into()),
                tenant: Some("acme".into()),
                trigger: Some("cron".into()),
                prompt: Some("triage".into()),
                session_id: Some("s1".into()),
                user_id: Some("u1".into()),
                ..Metadata::default()
            },
            ..CallRecord::default()
        };
        let facets = of_call(&CallSummary::from_record(&call));
        let mut tags: Vec<u8> = facets.iter().map(|f| f.as_bytes()[0]).collect();
        tags.dedup();
        let mut want: Vec<u8> = (0..=255u8).filter(|t| index::is_paired(*t)).collect();
        want.push(tag::ALL);
        want.sort_unstable();
        assert_eq!(tags, want, "{facets:?}");
        assert_eq!(facets.iter().filter(|f| f.starts_with('m')).count(), 1);
        assert!(facets.contains(&"h=1".to_string()));
    }

    #[test]
    fn long_values_are_keyed_by_their_digest() {
        let long = "x".repeat(LONGEST_PLAIN + 1);
        let key = facet(tag::MODEL, &long);
        assert_eq!(key.len(), 2 + 64);
        assert!(key.starts_with("m#"));
        assert_eq!(facet(tag::MODEL, "gpt"), "m=gpt");
        assert_ne!(key, facet(tag::MODEL, &"x".repeat(LONGEST_PLAIN + 2)));
    }

    #[test]
    fn one_or_two_facets_are_exact_and_longer_conjunctions_an_upper_bound() {
        let one = Filter {
            eq: vec![(tag::AGENT, vec!["a".into(), "b".into()])],
            ..Filter::default()
        };
        assert!(groups(&one).exact());
        let two_models = Filter {
            eq: vec![(tag::MODEL, vec!["a".into(), "b".into()])],
            ..Filter::default()
        };
        assert!(!groups(&two_models).exact());
        let pair = Filter {
            eq: vec![(tag::AGENT, vec!["a".into()])],
            has_session: Some(true),
            ..Filter::default()
        };
        assert!(groups(&pair).exact(), "a pair is counted");
        let three = Filter {
            eq: vec![
                (tag::AGENT, vec!["a".into()]),
                (tag::TENANT, vec!["t".into()]),
            ],
            has_session: Some(true),
            ..Filter::default()
        };
        assert!(!groups(&three).exact());
        assert!(groups(&three).counted_only);
        let user = Filter {
            eq: vec![(tag::USER, vec!["u".into()])],
            ..Filter::default()
        };
        let g = groups(&user);
        assert!(!g.exact() && !g.counted_only);
        assert_eq!(g.groups, vec![(tag::ALL, vec![ALL.to_string()])]);
        assert!(groups(&Filter::default()).exact());
    }
}
