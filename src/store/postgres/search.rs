//! Text search (`q`) on PostgreSQL: the same match as sled's, over the same texts.
//!
//! A call's `q` texts (its system prompt and last user message) are content, sealed
//! when encryption is on, so the database cannot match them: the engine walks the
//! rows the rest of the filter selects, newest first, `CHUNK` at a time, loads
//! their manifests and texts in two queries per chunk, and keeps the rows whose
//! lowercased text contains the (lowercased) needle; a run matches when one of its
//! calls does. Work is bounded per request by `SCAN_BUDGET` rows: beyond it the
//! page ends early with `has_more` and a cursor to resume from, and `total` is a
//! lower bound, as on sled.

use super::lists::{self, Table};
use super::{calls, content, PgError};
use crate::store::content::Codec;
use crate::store::crypto::Addr;
use crate::store::manifest::search_text;
use crate::store::summary::Filter;
use crate::store::types::{Page, PageRequest, Position, COUNT_CAP};
use crate::store::StoreError;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio_postgres::GenericClient;

/// Rows read and matched per step.
const CHUNK: usize = 200;
/// Rows examined per request at most (page and total together).
const SCAN_BUDGET: usize = 100_000;

/// Of these calls, those whose `q` texts contain the needle.
async fn matching_calls(
    client: &impl GenericClient,
    codec: &Arc<Codec>,
    ids: &[String],
    needle: &str,
) -> Result<HashSet<String>, StoreError> {
    let mut manifests = Vec::new();
    let mut roots: Vec<Addr> = Vec::new();
    for (id, sealed) in calls::manifests(client, ids).await? {
        let m = super::engine::open_manifest(codec, &id, &sealed)?;
        roots.extend(m.search_system.into_iter().chain(m.search_user));
        manifests.push((id, m));
    }
    let loaded = content::load(client, codec.clone(), &roots).await?;
    let mut hits = HashSet::new();
    for (id, m) in manifests {
        let Some(text) = search_text(&m, &loaded)? else {
            continue;
        };
        let found = [text.system, text.last_user]
            .into_iter()
            .flatten()
            .any(|t| t.to_lowercase().contains(needle));
        if found {
            hits.insert(id);
        }
    }
    Ok(hits)
}

/// Of these rows (calls or runs), those that match the needle.
async fn matching(
    client: &impl GenericClient,
    codec: &Arc<Codec>,
    table: Table,
    ids: &[String],
    needle: &str,
) -> Result<HashSet<String>, StoreError> {
    match table {
        Table::Calls => matching_calls(client, codec, ids, needle).await,
        Table::Invocations => {
            let mut run_of: HashMap<String, String> = HashMap::new();
            for row in client
                .query(
                    "SELECT id, invocation_id FROM calls WHERE invocation_id = ANY($1)",
                    &[&ids],
                )
                .await
                .map_err(PgError::from)?
            {
                run_of.insert(row.get(0), row.get(1));
            }
            let call_ids: Vec<String> = run_of.keys().cloned().collect();
            let hits = matching_calls(client, codec, &call_ids, needle).await?;
            Ok(hits.iter().filter_map(|c| run_of.get(c).cloned()).collect())
        }
    }
}

/// What one walk found: the rows kept (stored summary JSON, id).
struct Walk {
    items: Vec<(serde_json::Value, String)>,
    next: Option<Position>,
    has_more: bool,
    matched: u64,
    truncated: bool,
}

/// Walks from `after`: skips `offset` matches, keeps `limit`, then (when `count`)
/// goes on counting matches up to `COUNT_CAP`.
#[allow(clippy::too_many_arguments)]
async fn walk(
    client: &impl GenericClient,
    codec: &Arc<Codec>,
    table: Table,
    filter: &Filter,
    needle: &str,
    mut after: Option<Position>,
    offset: u64,
    limit: usize,
    count: bool,
) -> Result<Walk, StoreError> {
    let mut walk = Walk {
        items: Vec::new(),
        next: None,
        has_more: false,
        matched: 0,
        truncated: false,
    };
    let mut examined = 0usize;
    'scan: loop {
        let request = PageRequest {
            after: after.clone(),
            limit: CHUNK,
            ..PageRequest::default()
        };
        let mut rows = lists::rows(client, table, filter, &request, CHUNK).await?;
        let more_rows = rows.len() > CHUNK;
        rows.truncate(CHUNK);
        let ids: Vec<String> = rows.iter().map(|r| r.2.clone()).collect();
        let hits = matching(client, codec, table, &ids, needle).await?;
        for (json, started, id) in rows {
            examined += 1;
            let position = Position {
                time_us: started.max(0) as u64,
                id: id.clone(),
            };
            after = Some(position.clone());
            if !hits.contains(&id) {
                continue;
            }
            walk.matched += 1;
            if walk.matched <= offset {
                continue;
            }
            if walk.items.len() < limit {
                walk.items.push((json, id));
                walk.next = Some(position);
                continue;
            }
            walk.has_more = true;
            if !count || walk.matched > COUNT_CAP {
                break 'scan;
            }
        }
        if !more_rows {
            break;
        }
        if examined >= SCAN_BUDGET {
            // Unknown beyond here: say there may be more, resume where the walk stopped.
            walk.truncated = true;
            walk.has_more = true;
            if walk.items.len() < limit {
                walk.next = after;
            }
            break;
        }
    }
    if !walk.has_more {
        walk.next = None;
    }
    Ok(walk)
}

/// A newest-first page of what the filter, text included, matches.
pub async fn page<T>(
    client: &impl GenericClient,
    codec: &Arc<Codec>,
    table: Table,
    filter: &Filter,
    request: &PageRequest,
    mut item: impl FnMut(serde_json::Value, &str) -> Result<T, PgError>,
) -> Result<Page<T>, StoreError> {
    let needle = filter.text.clone().unwrap_or_default().to_lowercase();
    let rest = Filter {
        text: None,
        ..filter.clone()
    };
    let limit = request.limit.clamp(1, 1000);
    let count_here = request.count_total && request.after.is_none();
    let found = walk(
        client,
        codec,
        table,
        &rest,
        &needle,
        request.after.clone(),
        request.offset as u64,
        limit,
        count_here,
    )
    .await?;
    let (total, total_is_lower_bound) = if !request.count_total {
        (0, true)
    } else if count_here {
        (
            found.matched.min(COUNT_CAP),
            found.matched > COUNT_CAP || found.truncated,
        )
    } else {
        // A later page counts from the start, as the first did.
        let all = walk(client, codec, table, &rest, &needle, None, 0, 0, true).await?;
        (
            all.matched.min(COUNT_CAP),
            all.matched > COUNT_CAP || all.truncated,
        )
    };
    let items = found
        .items
        .into_iter()
        .map(|(json, id)| item(json, &id))
        .collect::<Result<Vec<T>, PgError>>()?;
    Ok(Page {
        items,
        total,
        total_is_lower_bound,
        has_more: found.has_more,
        next: found.next,
    })
}
