//! One conformance suite for every storage engine: each store behaviour is one
//! function over the engine-neutral `Store` handle, and `conformance!` runs it on
//! sled (a temporary directory) and on PostgreSQL (a fresh database on the test
//! server of `pg.rs`) as `on_sled::<behaviour>` and `on_postgres::<behaviour>`, so a
//! failure names its engine. A new engine adds one `Engines` opener and one module
//! line to the macro; a new promise adds one function and one name in the list.
//!
//! Calls are written as the writer writes them (`write`): each run's calls placed
//! and folded into the run by `agent_loop::fold_run`, the batch's changed runs and
//! moved calls beside its calls.

use super::pg;
use super::postgres::{distinct_text, round_with_bodies};
use super::storage::{anthropic_round, b64, call, fixture_names, keyed, noise, sha256_hex};
use super::util::{fixture, fixture_url, TempDir};
use llmtap::record::{CallRecord, CallStatus, Cost, Endpoint, InvocationRecord};
use llmtap::record::{Message, ProviderKind, RequestView};
use llmtap::store::summary::{tag, Filter};
use llmtap::store::{BucketRange, PageRequest, RateLimitKey, RollupScope, Store, StoreOptions};
use std::collections::HashMap;

const DAY_US: u64 = 86_400_000_000;
/// A time in 2026: PostgreSQL keeps calls in day partitions, so behaviours use dates
/// a deployment sees.
const T0: u64 = 1_780_000_000_000_000;

/// Opens a store of an engine: the instance name (PostgreSQL), the options.
type Opener = Box<dyn Fn(&str, StoreOptions) -> Store + Send + Sync>;

/// Which calls a list filter should match.
type Expected = Box<dyn Fn(&CallRecord) -> bool>;

/// Opens stores of one engine on one backing (a directory, a database).
pub struct Engines {
    open: Opener,
    /// The sled store's directory, or the PostgreSQL engines' context directory.
    _dir: TempDir,
    _db: Option<pg::TestDb>,
}

impl Engines {
    fn sled(name: &str) -> Engines {
        let dir = TempDir::new(&format!("conformance-{name}"));
        let path = dir.path().to_path_buf();
        Engines {
            open: Box::new(move |_, options| Store::open_with(&path, options).unwrap()),
            _dir: dir,
            _db: None,
        }
    }

    async fn postgres(name: &str) -> Engines {
        use llmtap::store::postgres::prepare;
        let db = pg::fresh_db(name).await;
        let (pool, _) = prepare(&super::postgres::engine_config(&db.url()))
            .await
            .unwrap();
        let dir = TempDir::new(&format!("conformance-pg-{name}"));
        let path = dir.path().to_path_buf();
        Engines {
            open: Box::new(move |instance, options| {
                super::postgres::pg_store(&pool, &path, instance, options)
            }),
            _dir: dir,
            _db: Some(db),
        }
    }

    /// The store with these options (sled: the directory's store, opened once at a
    /// time; PostgreSQL: an instance named `instance` on the database).
    fn open(&self, options: StoreOptions) -> Store {
        (self.open)("a", options)
    }

    /// Stores for `n` concurrent writers: on sled the one store shared by threads (one
    /// process owns a sled directory), on PostgreSQL `n` instances on one database.
    fn writers(&self, store: &Store, n: usize) -> Vec<Store> {
        if self._db.is_none() {
            return vec![store.clone(); n];
        }
        (0..n)
            .map(|i| (self.open)(&format!("w{i}"), store.options().clone()))
            .collect()
    }
}

macro_rules! conformance {
    ($($behaviour:ident),* $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let engines = super::Engines::sled(stringify!($behaviour));
                    tokio::task::spawn_blocking(move || super::$behaviour(&engines))
                        .await
                        .unwrap();
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $behaviour() {
                    let engines = super::Engines::postgres(stringify!($behaviour)).await;
                    tokio::task::spawn_blocking(move || super::$behaviour(&engines))
                        .await
                        .unwrap();
                }
            )*
        }
    };
}

conformance! {
    bodies_reconstruct_byte_for_byte,
    sealed_bodies_reconstruct_byte_for_byte,
    shared_content_is_stored_once_with_exact_reference_counts,
    concurrent_writers_of_the_same_content_keep_exact_reference_counts,
    retention_deletes_old_calls_and_only_unreferenced_content,
    body_retention_keeps_metadata_and_cost,
    deleting_a_call_frees_its_content_and_takes_it_off_every_count,
    repricing_changes_the_costs_in_its_range_everywhere,
    counters_stay_exact_under_concurrent_writers_and_deletes,
    lists_filter_page_by_cursor_and_total_exactly,
    sessions_sum_their_calls,
    rate_limits_keep_the_latest_state_and_the_series,
    runs_number_their_rounds_and_roll_up_their_calls,
    a_run_is_read_once_with_every_round_it_counts,
    audit_entries_and_the_capture_log_position_are_kept,
    tool_calls_count_apart_in_the_rollups,
    rollup_ranges_sum_the_buckets_that_start_in_them,
}

/// Writes calls as the writer does (`writer.rs`, `store_part`): each run's calls
/// placed and folded into the run by `agent_loop::fold_run` against the stored run
/// (and its stored calls from a late call's start), the batch's changed runs and
/// moved calls beside its calls; returns the calls as placed.
pub fn write(store: &Store, calls: Vec<CallRecord>) -> Vec<CallRecord> {
    let mut by_run: Vec<(String, Vec<CallRecord>)> = Vec::new();
    for call in calls {
        match by_run.iter_mut().find(|(id, _)| *id == call.invocation_id) {
            Some((_, list)) => list.push(call),
            None => by_run.push((call.invocation_id.clone(), vec![call])),
        }
    }
    let (mut placed, mut changed, mut moved) = (Vec::new(), Vec::new(), Vec::new());
    for (id, mut run_calls) in by_run {
        let prior = store.get_invocation(&id).unwrap();
        let stored = match llmtap::agent_loop::late_from(prior.as_ref(), &run_calls) {
            Some(from_us) => store.run_loop_calls(&id, from_us).unwrap(),
            None => Vec::new(),
        };
        let (run, run_moved) = llmtap::agent_loop::fold_run(prior, &mut run_calls, &stored);
        moved.extend(run_moved);
        changed.push(run);
        placed.extend(run_calls);
    }
    store.write_batch_moving(&placed, &changed, &moved).unwrap();
    placed
}

fn page(limit: usize) -> PageRequest {
    PageRequest {
        limit,
        count_total: true,
        ..PageRequest::default()
    }
}

fn eq(tag: u8, value: &str) -> Filter {
    Filter {
        eq: vec![(tag, vec![value.to_string()])],
        ..Filter::default()
    }
}

/// Calls of 14 runs with varied facets (`postgres::varied_runs`), at `T0`.
fn varied() -> Vec<CallRecord> {
    super::postgres::varied_runs(T0)
}

// ---------------------------------------------------------------------------------
// Bodies and content

/// The fixture exchanges of every provider, a hand-made view and bodies that are not
/// UTF-8 read back with the exact bytes and views they were written with.
fn bodies_reconstruct_byte_for_byte(engines: &Engines) {
    reconstructs_byte_for_byte(engines, StoreOptions::default());
}

/// The same, with content sealed by a key.
fn sealed_bodies_reconstruct_byte_for_byte(engines: &Engines) {
    reconstructs_byte_for_byte(engines, keyed());
}

fn reconstructs_byte_for_byte(engines: &Engines, options: StoreOptions) {
    {
        let store = engines.open(options);
        let mut calls = Vec::new();
        for (i, name) in fixture_names().iter().enumerate() {
            let fx = fixture(name);
            let request = fx["request"]["body"].as_str().unwrap_or_default();
            let response = fx["response"]["body"].as_str().unwrap();
            let at = T0 + i as u64;
            let mut c = call(
                &llmtap::ids::new_id("c_", at),
                "inv",
                1,
                at,
                request,
                response,
            );
            // The record as the recorder makes it: views are the parsers' own, so the
            // store keeps only the raw bodies and parses them again when read.
            let provider = fx["provider"].as_str().unwrap_or("openai");
            let kind = match provider {
                "anthropic" => ProviderKind::Anthropic,
                "gemini" => ProviderKind::Gemini,
                _ => ProviderKind::Openai,
            };
            let url: http::Uri = fixture_url(&fx);
            let status = fx["response"]["status"].as_u64().unwrap() as u16;
            let content_type = fx["response"]["headers"]["content-type"]
                .as_str()
                .map(str::to_owned);
            let parsed = llmtap::parse::parse_exchange(&llmtap::parse::ExchangeInput {
                kind,
                provider,
                path: url.path(),
                query: url.query(),
                request_body: request.as_bytes(),
                response_status: Some(status),
                response_content_type: content_type.as_deref(),
                response_body: response.as_bytes(),
            });
            c.kind = kind.as_str().into();
            c.provider = provider.into();
            c.path = url.path().into();
            c.http_status = Some(status);
            if let Some(ct) = content_type {
                c.response_headers.insert("content-type".into(), ct);
            }
            c.endpoint = Some(parsed.endpoint);
            c.request = Some(parsed.request);
            c.response = Some(parsed.response);
            calls.push(c);
        }
        // A view the parsers did not make (no endpoint) is stored as it is.
        let at = T0 + 9_998;
        let mut handmade = call(&llmtap::ids::new_id("c_", at), "inv", 1, at, "{}", "{}");
        handmade.request = Some(RequestView {
            system: Some("system of a hand-made record".into()),
            messages: vec![Message {
                role: "user".into(),
                text: Some("hello".into()),
                ..Message::default()
            }],
            ..RequestView::default()
        });
        calls.push(handmade);
        // A body that is not UTF-8 keeps its exact bytes too.
        let at = T0 + 9_999;
        let mut odd = call(&llmtap::ids::new_id("c_", at), "inv", 1, at, "", "");
        odd.request_body_bytes = Some(b"{\"messages\":[\"\xff\xfe\"]}".to_vec());
        odd.request_body = Some(String::from_utf8_lossy(b"{\"messages\":[\"\xff\xfe\"]}").into());
        odd.response_body_bytes = Some(vec![0x1f, 0x8b, 0, 0xff]);
        odd.response_body = Some(String::from_utf8_lossy(&[0x1f, 0x8b, 0, 0xff]).into());
        calls.push(odd);
        let calls = write(&store, calls);
        for c in &calls {
            let want_req = c
                .request_body_bytes
                .clone()
                .unwrap_or_else(|| c.request_body.clone().unwrap().into_bytes());
            let want_resp = c
                .response_body_bytes
                .clone()
                .unwrap_or_else(|| c.response_body.clone().unwrap().into_bytes());
            assert_eq!(
                store
                    .get_raw(&c.id, false)
                    .unwrap()
                    .unwrap_or_else(|| panic!(
                        "{}: no request (encrypted: {})",
                        c.id,
                        store.encrypted()
                    )),
                want_req,
                "{}: request",
                c.id
            );
            assert_eq!(
                store.get_raw(&c.id, true).unwrap().unwrap(),
                want_resp,
                "{}: response",
                c.id
            );
            let back = store.get_call(&c.id).unwrap().unwrap();
            assert_eq!(back.request_body, c.request_body);
            assert_eq!(back.response_body, c.response_body);
            assert_eq!(back.request, c.request, "{}: request view", c.id);
            assert_eq!(back.response, c.response, "{}: response view", c.id);
            // The metadata holds no content.
            let meta = store.get_call_meta(&c.id).unwrap().unwrap();
            assert!(meta.request_body.is_none() && meta.request.is_none());
        }
        // The fixture with a base64 image lists it as a mirrored attachment.
        let image = calls
            .iter()
            .find(|c| c.request_body.as_deref().unwrap().contains("iVBORw0KGgo"))
            .unwrap();
        let meta = store.get_call_meta(&image.id).unwrap().unwrap();
        assert_eq!(meta.attachments.len(), 1, "{:?}", meta.attachments);
        assert_eq!(meta.attachments[0].media_type.as_deref(), Some("image/png"));
        assert_eq!(meta.attachments[0].source, "mirrored");
    }
}

/// Two runs of ten rounds re-sending one system prompt, one image and their history:
/// the prompt is one chunk and the image one blob, counted once per reference.
fn shared_content_is_stored_once_with_exact_reference_counts(engines: &Engines) {
    let store = engines.open(StoreOptions::default());
    let system = format!("You are a careful coding agent. {}", "Rule. ".repeat(600));
    let image = noise(7, 20_000);
    let mut raw_total = 0u64;
    let mut n = 0;
    let mut last = String::new();
    for (inv_id, task) in [("inv-a", "fix the bug"), ("inv-b", "write the docs")] {
        for round in 1..=10 {
            let body = anthropic_round(&system, &image, task, round);
            raw_total += body.len() as u64;
            n += 1;
            let at = T0 + n;
            let mut c = call(
                &llmtap::ids::new_id("c_", at),
                inv_id,
                round,
                at,
                &body,
                "{\"content\":[]}",
            );
            c.request = Some(RequestView {
                system: Some(system.clone()),
                ..RequestView::default()
            });
            let placed = write(&store, vec![c]);
            last.clone_from(&placed[0].id);
            assert_eq!(
                store.get_raw(&last, false).unwrap().unwrap(),
                body.as_bytes()
            );
        }
    }
    // The system prompt (its JSON string) is one chunk referenced by all 20 calls.
    let system_json = serde_json::to_string(&system).unwrap();
    assert_eq!(
        store
            .chunk_refs(&sha256_hex(system_json.as_bytes()))
            .unwrap(),
        21,
        "20 request bodies + the one parsed view they all share"
    );
    // The image is one blob, referenced by the one chunk holding round 1's message per run.
    let sha = sha256_hex(&image);
    assert_eq!(store.blob_refs(&sha).unwrap(), 2);
    let usage = store.content_usage().unwrap();
    assert_eq!(usage.blobs, 1);
    assert!(
        usage.chunk_bytes + usage.blob_bytes < raw_total / 10,
        "{usage:?} vs raw {raw_total}"
    );
    let meta = store.get_call_meta(&last).unwrap().unwrap();
    assert_eq!(meta.attachments[0].sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(meta.attachments[0].size, Some(20_000));
    let (media, bytes) = store.get_blob(&sha).unwrap().unwrap();
    assert_eq!((media.as_str(), bytes), ("image/png", image));
}

/// Three writers (sled: threads on one store; PostgreSQL: three instances) store
/// rounds sharing one large system prompt at once. Every body reads back exactly,
/// and deleting every call frees every piece: no reference was lost (a piece freed
/// early would fail a read) nor leaked (a piece left over).
fn concurrent_writers_of_the_same_content_keep_exact_reference_counts(engines: &Engines) {
    let store = engines.open(StoreOptions::default());
    let system = distinct_text("shared prompt", 9_000);
    let batches: Vec<Vec<Vec<CallRecord>>> = (0..3u64)
        .map(|writer| {
            (0..8u64)
                .map(|batch| {
                    (0..3u64)
                        .map(|i| {
                            let at = T0 + (writer * 1_000 + batch * 10 + i) * 1_000;
                            round_with_bodies(
                                &format!("run-{writer}-{i}"),
                                batch as u32 + 1,
                                at,
                                &system,
                                CallStatus::Success,
                            )
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let threads: Vec<_> = engines
        .writers(&store, 3)
        .into_iter()
        .zip(batches.clone())
        .map(|(writer, batches)| {
            std::thread::spawn(move || {
                for batch in batches {
                    writer.write_batch(&batch, &runs_of(&batch)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all: Vec<CallRecord> = batches.into_iter().flatten().flatten().collect();
    assert_eq!(store.call_count(), 72);
    assert_eq!(store.rollup_total(&RollupScope::All).unwrap().calls, 72);
    for c in &all {
        let back = store.get_call(&c.id).unwrap().unwrap();
        assert_eq!(back.request_body, c.request_body, "{}", c.id);
        assert_eq!(back.response_body, c.response_body, "{}", c.id);
    }
    assert!(store.content_usage().unwrap().chunks > 0);
    for c in &all {
        assert!(store.delete_call(&c.id).unwrap());
    }
    let usage = store.content_usage().unwrap();
    assert_eq!(
        (usage.calls, usage.chunks, usage.blobs),
        (0, 0, 0),
        "{usage:?}"
    );
}

/// A batch's runs rolled up from its calls alone (calls of runs no other batch has).
fn runs_of(calls: &[CallRecord]) -> Vec<InvocationRecord> {
    let mut runs: HashMap<String, InvocationRecord> = HashMap::new();
    for c in calls {
        let prior = runs.remove(&c.invocation_id);
        runs.insert(c.invocation_id.clone(), llmtap::record::roll_up(prior, c));
    }
    runs.into_values().collect()
}

// ---------------------------------------------------------------------------------
// Retention, deletion, repricing

/// Retention deletes whole calls and runs older than `retention_days`, from records,
/// lists and totals, and frees only the content no surviving call uses.
fn retention_deletes_old_calls_and_only_unreferenced_content(engines: &Engines) {
    let store = engines.open(StoreOptions {
        retention_days: 30,
        ..StoreOptions::default()
    });
    let now = T0;
    let system = "S".repeat(2000);
    let shared = noise(11, 5000);
    let only_old = noise(12, 5000);
    let old_body = {
        let mut v: serde_json::Value =
            serde_json::from_str(&anthropic_round(&system, &shared, "old task", 2)).unwrap();
        v["messages"][0]["content"].as_array_mut().unwrap().push(
            serde_json::json!({"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": b64(&only_old)}}),
        );
        serde_json::to_string(&v).unwrap()
    };
    let old_at = now - 40 * DAY_US;
    let old = write(
        &store,
        vec![
            call(
                &llmtap::ids::new_id("c_", old_at),
                "inv-old",
                1,
                old_at,
                &old_body,
                "{}",
            ),
            call(
                &llmtap::ids::new_id("c_", old_at + 1),
                "inv-old",
                2,
                old_at + 1,
                &old_body,
                "{\"x\":1}",
            ),
        ],
    );
    let new_body = anthropic_round(&system, &shared, "new task", 3);
    let new_at = now - DAY_US;
    let new = write(
        &store,
        vec![call(
            &llmtap::ids::new_id("c_", new_at),
            "inv-new",
            1,
            new_at,
            &new_body,
            "{}",
        )],
    );
    let report = store.sweep(now).unwrap();
    assert_eq!(report.calls_deleted, 2);
    assert_eq!(report.invocations_deleted, 1);
    assert!(store.get_call(&old[0].id).unwrap().is_none());
    assert!(store.get_invocation("inv-old").unwrap().is_none());
    assert!(store.invocation_calls("inv-old").unwrap().is_empty());
    // Gone from lists and their totals too, not only as a record.
    let listed = store
        .list_invocations(&Filter::default(), &page(10))
        .unwrap();
    let ids: Vec<&str> = listed.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!((ids, listed.total), (vec!["inv-new"], 1));
    assert_eq!(store.rollup_total(&RollupScope::All).unwrap().calls, 1);
    // The blob only the old calls used is gone; the shared one lives on.
    assert!(store.get_blob(&sha256_hex(&only_old)).unwrap().is_none());
    assert_eq!(
        store.get_blob(&sha256_hex(&shared)).unwrap().unwrap().1,
        shared
    );
    assert_eq!(
        store.get_raw(&new[0].id, false).unwrap().unwrap(),
        new_body.as_bytes()
    );
    assert!(
        report.chunks_freed > 0 && report.blobs_freed == 1,
        "{report:?}"
    );
    // Later, the new call expires too and the store is empty of content.
    let report = store.sweep(now + 60 * DAY_US).unwrap();
    assert_eq!(report.calls_deleted, 1);
    let usage = store.content_usage().unwrap();
    assert_eq!(
        (usage.calls, usage.chunks, usage.blobs),
        (0, 0, 0),
        "{usage:?}"
    );
}

/// `body_retention_days` drops the bodies, views and `q` texts of older calls and
/// keeps their metadata and cost; content a younger call uses stays.
fn body_retention_keeps_metadata_and_cost(engines: &Engines) {
    let store = engines.open(StoreOptions {
        retention_days: 90,
        body_retention_days: 7,
        ..StoreOptions::default()
    });
    let now = T0;
    let image = noise(21, 3000);
    let body = anthropic_round("sys", &image, "t", 2);
    let view = |mut c: CallRecord| {
        c.endpoint = Some(Endpoint::Messages);
        c.request = Some(llmtap::parse::request_view(
            Endpoint::Messages,
            body.as_bytes(),
        ));
        c
    };
    let old_at = now - 10 * DAY_US;
    let mut old = view(call(
        &llmtap::ids::new_id("c_", old_at),
        "i",
        1,
        old_at,
        &body,
        "{\"a\":1}",
    ));
    old.cost_usd = Some(0.25);
    old.model = Some("claude".into());
    let fresh = view(call(
        &llmtap::ids::new_id("c_", now),
        "i",
        2,
        now,
        &body,
        "{\"a\":2}",
    ));
    let (old_id, fresh_id) = (old.id.clone(), fresh.id.clone());
    write(&store, vec![old, fresh]);
    let report = store.sweep(now).unwrap();
    assert_eq!((report.bodies_dropped, report.calls_deleted), (1, 0));
    let kept = store.get_call(&old_id).unwrap().unwrap();
    assert_eq!(kept.cost_usd, Some(0.25));
    assert_eq!(kept.model.as_deref(), Some("claude"));
    assert!(kept.request_body.is_none() && kept.response_body.is_none());
    assert!(store.get_raw(&old_id, false).unwrap().is_none());
    // The parsed view and the `q` texts are prompt content too: gone with the body.
    assert!(kept.request.is_none());
    assert!(store.call_text(&old_id).unwrap().is_none());
    let text = store.call_text(&fresh_id).unwrap().unwrap();
    assert_eq!(text.system.as_deref(), Some("sys"));
    assert!(store
        .get_call(&fresh_id)
        .unwrap()
        .unwrap()
        .request
        .is_some());
    // The image is still used by the fresh call.
    assert!(store.get_blob(&sha256_hex(&image)).unwrap().is_some());
    assert_eq!(
        store.get_raw(&fresh_id, false).unwrap().unwrap(),
        body.as_bytes()
    );
    // A second sweep has nothing left to do.
    assert_eq!(store.sweep(now).unwrap().bodies_dropped, 0);
}

/// Deleting a call removes it and its own content, keeps content others share, and
/// takes it off the rollups, counters and lists.
fn deleting_a_call_frees_its_content_and_takes_it_off_every_count(engines: &Engines) {
    let store = engines.open(StoreOptions::default());
    let shared = distinct_text("shared prompt", 9_000);
    let own = distinct_text("prompt of the deleted call", 9_000);
    let kept = round_with_bodies("run", 1, T0, &shared, CallStatus::Success);
    let deleted = round_with_bodies("run", 2, T0 + 1000, &own, CallStatus::Failed);
    let also = round_with_bodies("other", 1, T0 + 2000, &shared, CallStatus::Success);
    write(&store, vec![kept.clone(), deleted.clone(), also.clone()]);
    let before = store.content_usage().unwrap();
    assert!(store.delete_call(&deleted.id).unwrap());
    assert!(store.get_call(&deleted.id).unwrap().is_none());
    assert!(!store.delete_call(&deleted.id).unwrap(), "gone already");
    for survivor in [&kept, &also] {
        let call = store.get_call(&survivor.id).unwrap().unwrap();
        assert!(call.request_body.unwrap().contains(&shared[..64]));
    }
    let after = store.content_usage().unwrap();
    assert!(after.chunks < before.chunks, "{before:?} -> {after:?}");
    assert!(
        after.chunk_bytes + 3_000 < before.chunk_bytes,
        "the deleted prompt is freed: {before:?} -> {after:?}"
    );
    assert_eq!(store.call_count(), 2);
    let total = store.rollup_total(&RollupScope::All).unwrap();
    assert_eq!((total.calls, total.errors), (2, 0), "{total:?}");
    let failed = store
        .list_calls(&eq(tag::STATUS, "failed"), &page(10))
        .unwrap();
    assert_eq!((failed.items.len(), failed.total), (0, 0));
    let all = store.list_calls(&Filter::default(), &page(10)).unwrap();
    assert_eq!((all.items.len(), all.total), (2, 2));
    let planner = store
        .list_calls(&eq(tag::AGENT, "planner"), &page(10))
        .unwrap();
    assert_eq!(planner.total, 2);
}

/// A run's LLM call and its tool calls (HTTP, MCP): the rollups count the LLM
/// call as a call and the tool calls apart (`/agents`' tool figures), per scope, and
/// a deleted tool call is taken off them.
pub fn tool_call_run() -> Vec<CallRecord> {
    let round = round_with_bodies("run", 1, T0, "system", CallStatus::Success);
    let tool = |id: &str, kind: &str, at: u64, status: CallStatus| {
        let mut call = round.clone();
        call.id = id.into();
        call.kind = kind.into();
        call.started_at_us = T0 + at;
        call.status = Some(status);
        call.usage = Default::default();
        call.request = None;
        call
    };
    let mcp = |id: &str, method: &str, at: u64, status: CallStatus| {
        let mut call = tool(id, "mcp", at, status);
        call.mcp = Some(llmtap::record::McpExchange {
            transport: "http".into(),
            method: Some(method.into()),
            ..Default::default()
        });
        call
    };
    // The MCP handshake and list around the tool call are no tool calls
    // (`agent_loop::is_tool_step`): they count in no cell.
    vec![
        round.clone(),
        mcp("c_mcp_init", "initialize", 4_000, CallStatus::Failed),
        mcp("c_mcp_list", "tools/list", 4_500, CallStatus::Success),
        tool("c_tool_http", "http", 5_000, CallStatus::Success),
        mcp("c_tool_mcp", "tools/call", 6_000, CallStatus::Failed),
    ]
}

fn tool_calls_count_apart_in_the_rollups(engines: &Engines) {
    let store = engines.open(StoreOptions::default());
    write(&store, tool_call_run());
    let counts = |scope: &RollupScope| {
        let cell = store.rollup_total(scope).unwrap();
        (cell.calls, cell.errors, cell.tool_calls, cell.tool_failures)
    };
    assert_eq!(counts(&RollupScope::All), (1, 0, 2, 1));
    assert_eq!(counts(&RollupScope::Tenant("acme".into())), (1, 0, 2, 1));
    let agents = store.rollup_agents(Some("acme")).unwrap();
    let planner: Vec<_> = agents
        .iter()
        .map(|(agent, cell)| (agent.as_str(), cell.tool_calls, cell.tool_failures))
        .collect();
    assert_eq!(planner, vec![("planner", 2, 1)]);
    assert!(store.delete_call("c_tool_mcp").unwrap());
    assert_eq!(counts(&RollupScope::All), (1, 0, 1, 0));
}

/// A window's rollup sum (`/summary`'s today and last 24 hours) adds the 15-minute
/// buckets that start in it: a bucket that started before the window is left out
/// whole, one that starts before its end counts whole.
fn rollup_ranges_sum_the_buckets_that_start_in_them(engines: &Engines) {
    const BUCKET: u64 = llmtap::store::index::BUCKET_US;
    let store = engines.open(StoreOptions::default());
    let b0 = T0 - T0 % BUCKET;
    let at = |id: &str, started: u64| {
        round_with_bodies(
            &format!("run-{id}"),
            1,
            started,
            "system",
            CallStatus::Success,
        )
    };
    let mut calls = vec![
        at("a", b0 + 5),
        at("b", b0 + BUCKET),
        at("c", b0 + 2 * BUCKET + 1),
    ];
    for (i, call) in calls.iter_mut().enumerate() {
        call.id = format!("c{i}");
    }
    write(&store, calls);
    let calls_in = |from: u64, to: u64| {
        store
            .rollup_range(&RollupScope::All, BucketRange::starting_in(from, to))
            .unwrap()
            .calls
    };
    assert_eq!(calls_in(b0, b0 + 2 * BUCKET), 2);
    assert_eq!(
        calls_in(b0 + 1, b0 + 2 * BUCKET + 2),
        2,
        "a's bucket started before"
    );
    assert_eq!(calls_in(b0 + BUCKET, b0 + BUCKET + 1), 1);
    assert_eq!(calls_in(b0 + 2 * BUCKET + 1, b0 + 3 * BUCKET), 0);
    assert_eq!(calls_in(0, u64::MAX / 2), 3);
    let nobody = RollupScope::Tenant("nobody".into());
    assert_eq!(
        store
            .rollup_range(&nobody, BucketRange::starting_in(0, u64::MAX / 2))
            .unwrap()
            .calls,
        0
    );
}

/// Repricing a time range changes the cost of the calls in it (and only them) in
/// records, lists, runs and rollups.
fn repricing_changes_the_costs_in_its_range_everywhere(engines: &Engines) {
    let store = engines.open(StoreOptions::default());
    let calls = write(&store, varied());
    let (from, to) = (T0 + 4_000_000, T0 + 20_000_000);
    let triple = |call: &CallRecord| -> Option<Cost> {
        let mut cost = call.cost.clone()?;
        cost.total_pusd *= 3;
        cost.total_usd = Some(cost.total_pusd as f64 / 1e12);
        Some(cost)
    };
    let in_range = |c: &CallRecord| c.started_at_us >= from && c.started_at_us < to;
    let changed: Vec<&CallRecord> = calls
        .iter()
        .filter(|c| in_range(c) && c.cost.as_ref().is_some_and(|c| c.total_pusd > 0))
        .collect();
    let report = store.reprice(from, to, &mut |c| triple(c)).unwrap();
    assert_eq!(
        report.examined,
        calls.iter().filter(|c| in_range(c)).count() as u64,
        "{report:?}"
    );
    assert_eq!(report.changed, changed.len() as u64, "{report:?}");
    assert!(report.changed > 0 && report.changed < calls.len() as u64);
    let cost = |c: &CallRecord| c.cost.as_ref().map_or(0, |c| c.total_pusd);
    let new_cost = |c: &CallRecord| if in_range(c) { 3 * cost(c) } else { cost(c) };
    for c in &calls {
        let stored = store.get_call_meta(&c.id).unwrap().unwrap();
        assert_eq!(cost(&stored), new_cost(c), "{}", c.id);
    }
    let total: u64 = calls.iter().map(new_cost).sum();
    assert_eq!(
        store.rollup_total(&RollupScope::All).unwrap().cost_pusd,
        total
    );
    let acme: u64 = calls
        .iter()
        .filter(|c| c.metadata.tenant.as_deref() == Some("acme"))
        .map(new_cost)
        .sum();
    assert_eq!(
        store
            .rollup_total(&RollupScope::Tenant("acme".into()))
            .unwrap()
            .cost_pusd,
        acme
    );
    let listed = store.list_calls(&Filter::default(), &page(100)).unwrap();
    assert_eq!(
        listed
            .items
            .iter()
            .filter_map(|s| s.cost_pusd())
            .sum::<u64>(),
        total
    );
    for run in ["run-1", "run-5"] {
        let want: u64 = calls
            .iter()
            .filter(|c| c.invocation_id == run)
            .map(new_cost)
            .sum();
        assert_eq!(
            store.get_invocation(run).unwrap().unwrap().cost_pusd,
            want,
            "{run}"
        );
    }
}

/// Concurrent writers and a deleting thread: the counters, totals and rollups end
/// exactly at what is stored.
fn counters_stay_exact_under_concurrent_writers_and_deletes(engines: &Engines) {
    let store = engines.open(StoreOptions::default());
    let (ids_tx, ids_rx) = std::sync::mpsc::channel::<String>();
    let writers: Vec<_> = engines
        .writers(&store, 2)
        .into_iter()
        .enumerate()
        .map(|(w, writer)| {
            let ids_tx = ids_tx.clone();
            std::thread::spawn(move || {
                for batch in 0..60u64 {
                    let calls: Vec<CallRecord> = (0..4u64)
                        .map(|i| {
                            let at = T0 + (w as u64 * 100_000 + batch * 10 + i) * 1_000;
                            let mut c = call(
                                &llmtap::ids::new_id("c_", at),
                                &format!("r{w}-{batch}-{i}"),
                                1,
                                at,
                                "{}",
                                "{}",
                            );
                            c.metadata.agent = Some("racer".into());
                            c.status = Some(CallStatus::Success);
                            c
                        })
                        .collect();
                    writer.write_batch(&calls, &runs_of(&calls)).unwrap();
                    for c in calls {
                        ids_tx.send(c.id).unwrap();
                    }
                }
            })
        })
        .collect();
    drop(ids_tx);
    let deleter = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut deleted = 0u64;
            // Every other call, as soon as it is stored.
            for (n, id) in ids_rx.iter().enumerate() {
                if n % 2 == 0 {
                    assert!(store.delete_call(&id).unwrap());
                    deleted += 1;
                }
            }
            deleted
        })
    };
    for w in writers {
        w.join().unwrap();
    }
    let left = 480 - deleter.join().unwrap();
    assert_eq!(store.call_count() as u64, left);
    let listed = store
        .list_calls(&eq(tag::AGENT, "racer"), &page(1))
        .unwrap();
    assert_eq!(listed.total, left, "the agent counter drifted");
    assert_eq!(
        store.rollup_total(&RollupScope::All).unwrap().calls,
        left,
        "the rollup drifted"
    );
    let agents = store.rollup_agents(None).unwrap();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!((agents[0].0.as_str(), agents[0].1.calls), ("racer", left));
}

// ---------------------------------------------------------------------------------
// Reads

/// Every page of a list walked by cursor: ids in order, once each, and the total.
fn walk_ids<T>(
    list: impl Fn(&PageRequest) -> Result<llmtap::store::Page<T>, llmtap::store::StoreError>,
    id: impl Fn(&T) -> String,
    limit: usize,
) -> (Vec<String>, u64) {
    let mut request = page(limit);
    let mut ids = Vec::new();
    let mut total = None;
    for _ in 0..100 {
        let got = list(&request).unwrap();
        assert!(!got.total_is_lower_bound);
        assert!(got.items.len() <= limit);
        total.get_or_insert(got.total);
        ids.extend(got.items.iter().map(&id));
        match got.next {
            Some(next) if got.has_more => request.after = Some(next),
            _ => break,
        }
    }
    (ids, total.unwrap_or(0))
}

/// Call and run lists: newest first (the id breaks ties), each filter's matches and
/// nothing else, every item once over the cursor's pages, exact totals, offsets.
fn lists_filter_page_by_cursor_and_total_exactly(engines: &Engines) {
    let store = engines.open(StoreOptions::default());
    let calls = write(&store, varied());
    let newest_first = |mut v: Vec<&CallRecord>| {
        v.sort_by(|a, b| (b.started_at_us, &b.id).cmp(&(a.started_at_us, &a.id)));
        v.into_iter().map(|c| c.id.clone()).collect::<Vec<_>>()
    };
    let status = |c: &CallRecord| c.status.map(|s| s.as_str().to_string());
    let cases: Vec<(Filter, Expected)> = vec![
        (Filter::default(), Box::new(|_| true)),
        (
            eq(tag::AGENT, "coder"),
            Box::new(|c| c.metadata.agent.as_deref() == Some("coder")),
        ),
        (
            eq(tag::TENANT, "acme"),
            Box::new(|c| c.metadata.tenant.as_deref() == Some("acme")),
        ),
        (
            eq(tag::STATUS, "failed"),
            Box::new(move |c| status(c).as_deref() == Some("failed")),
        ),
        (
            Filter {
                eq: vec![
                    (tag::AGENT, vec!["planner".into(), "critic".into()]),
                    (tag::TENANT, vec!["globex".into()]),
                ],
                ..Filter::default()
            },
            Box::new(|c| {
                matches!(c.metadata.agent.as_deref(), Some("planner" | "critic"))
                    && c.metadata.tenant.as_deref() == Some("globex")
            }),
        ),
        (
            Filter {
                from_us: Some(T0 + 3_000_000),
                to_us: Some(T0 + 8_000_000),
                ..Filter::default()
            },
            Box::new(|c| c.started_at_us >= T0 + 3_000_000 && c.started_at_us < T0 + 8_000_000),
        ),
        (
            Filter {
                has_session: Some(true),
                ..Filter::default()
            },
            Box::new(|c| c.metadata.session_id.is_some()),
        ),
    ];
    for (n, (filter, keep)) in cases.iter().enumerate() {
        let want = newest_first(calls.iter().filter(|c| keep(c)).collect());
        assert!(!want.is_empty(), "case {n} matches nothing");
        for limit in [1, 4, 100] {
            let (ids, total) = walk_ids(|r| store.list_calls(filter, r), |s| s.id.clone(), limit);
            assert_eq!(ids, want, "case {n}, pages of {limit}");
            assert_eq!(total, want.len() as u64, "case {n}: total");
        }
        let by_offset = store
            .list_calls(
                filter,
                &PageRequest {
                    limit: 2,
                    offset: 1,
                    ..PageRequest::default()
                },
            )
            .unwrap();
        let ids: Vec<String> = by_offset.items.iter().map(|s| s.id.clone()).collect();
        assert_eq!(
            ids,
            want.iter().skip(1).take(2).cloned().collect::<Vec<_>>(),
            "case {n}: offset"
        );
    }
    // Runs: newest first by start, with their tenant's filter.
    let mut runs: Vec<(u64, String)> = Vec::new();
    for c in &calls {
        if c.metadata.tenant.as_deref() == Some("acme")
            && !runs.iter().any(|r| r.1 == c.invocation_id)
        {
            runs.push((c.started_at_us, c.invocation_id.clone()));
        }
    }
    runs.sort_by(|a, b| b.cmp(a));
    let want: Vec<String> = runs.into_iter().map(|r| r.1).collect();
    let (ids, total) = walk_ids(
        |r| store.list_invocations(&eq(tag::TENANT, "acme"), r),
        |s| s.id.clone(),
        3,
    );
    assert_eq!((ids, total), (want.clone(), want.len() as u64));
}

/// Sessions sum their calls (counts, tokens, cost, times), list newest first by
/// first call, filter by tenant and agent, and give their calls in time order.
fn sessions_sum_their_calls(engines: &Engines) {
    use llmtap::store::index::SessionFilter;
    let store = engines.open(StoreOptions::default());
    let calls = write(&store, varied());
    let mut ids: Vec<String> = calls
        .iter()
        .filter_map(|c| c.metadata.session_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert!(ids.len() >= 3, "{ids:?}");
    let mut firsts = Vec::new();
    for id in &ids {
        let mine: Vec<&CallRecord> = calls
            .iter()
            .filter(|c| c.metadata.session_id.as_ref() == Some(id))
            .collect();
        let s = store.session(id).unwrap().unwrap();
        assert_eq!(s.calls, mine.len() as u64, "{id}");
        assert_eq!(
            s.input_tokens,
            mine.iter()
                .filter_map(|c| c.usage.input_tokens)
                .sum::<u64>(),
            "{id}"
        );
        assert_eq!(
            s.output_tokens,
            mine.iter()
                .filter_map(|c| c.usage.output_tokens)
                .sum::<u64>(),
            "{id}"
        );
        assert_eq!(
            s.cost_pusd,
            mine.iter()
                .filter_map(|c| c.cost.as_ref())
                .map(|c| c.total_pusd)
                .sum::<u64>(),
            "{id}"
        );
        let first = mine
            .iter()
            .min_by_key(|c| (c.started_at_us, &c.id))
            .unwrap();
        assert_eq!(s.first_at_us, first.started_at_us);
        assert_eq!(
            s.last_at_us,
            mine.iter().map(|c| c.started_at_us).max().unwrap()
        );
        assert_eq!(
            s.agent, first.metadata.agent,
            "{id}: its first call's agent"
        );
        firsts.push((s.first_at_us, id.clone()));
        let timeline: Vec<String> = store
            .session_calls(id, 100)
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        let mut want: Vec<&CallRecord> = mine.clone();
        want.sort_by(|a, b| (a.started_at_us, &a.id).cmp(&(b.started_at_us, &b.id)));
        assert_eq!(
            timeline,
            want.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
            "{id}"
        );
        assert_eq!(store.session_calls(id, 2).unwrap().len(), 2.min(mine.len()));
    }
    firsts.sort_by(|a, b| b.cmp(a));
    let listed = store
        .list_sessions(&SessionFilter::default(), &page(100))
        .unwrap();
    let got: Vec<String> = listed.items.iter().map(|s| s.id.clone()).collect();
    assert_eq!(got, firsts.iter().map(|f| f.1.clone()).collect::<Vec<_>>());
    assert_eq!(listed.total, ids.len() as u64);
    // Filtered by the first call's agent.
    let agent = store.session(&ids[0]).unwrap().unwrap().agent.unwrap();
    let filtered = store
        .list_sessions(
            &SessionFilter {
                agent: Some(agent.clone()),
                ..SessionFilter::default()
            },
            &page(100),
        )
        .unwrap();
    assert!(!filtered.items.is_empty());
    assert!(filtered
        .items
        .iter()
        .all(|s| s.agent.as_deref() == Some(agent.as_str())));
    assert!(store.session("s-nope").unwrap().is_none());
}

/// Rate-limit state per provider key and model: the latest-started call's windows
/// whatever the order of writing, 429s counted since a time, the series of points.
fn rate_limits_keep_the_latest_state_and_the_series(engines: &Engines) {
    use llmtap::record::{LimitWindow, RateLimit};
    let store = engines.open(StoreOptions::default());
    let limited = |i: u64, remaining: u64, status: CallStatus| {
        let at = T0 + i * 1_000_000;
        let mut c = super::synthetic::synthetic_call(
            "rl-run", 1, at, "planner", "acme", None, 0, status, 10, 5,
        );
        c.api_key_fingerprint = Some("fp-1".into());
        c.rate_limit = Some(RateLimit {
            requests: Some(LimitWindow {
                limit: Some(100),
                remaining: Some(remaining),
                ..LimitWindow::default()
            }),
            retry_after_s: (status == CallStatus::RateLimited).then_some(2.0),
            ..RateLimit::default()
        });
        c.invocation_id = format!("rl-{i}");
        c
    };
    // Written out of order: the later-started call's windows win.
    write(
        &store,
        vec![
            limited(3, 40, CallStatus::Success),
            limited(1, 90, CallStatus::Success),
        ],
    );
    write(
        &store,
        vec![
            limited(2, 0, CallStatus::RateLimited),
            limited(4, 0, CallStatus::RateLimited),
        ],
    );
    let states = store.ratelimit_states().unwrap();
    assert_eq!(states.len(), 1, "{states:?}");
    let (key, state) = &states[0];
    let model = limited(1, 0, CallStatus::Success).model.unwrap();
    assert_eq!(
        key,
        &RateLimitKey::new(&state.provider, Some("fp-1"), Some(&model))
    );
    assert_eq!(state.key_fingerprint.as_deref(), Some("fp-1"));
    assert_eq!(state.at_us, T0 + 4_000_000);
    assert_eq!(state.requests.as_ref().and_then(|w| w.remaining), Some(0));
    assert_eq!(state.last_429_us, Some(T0 + 4_000_000));
    assert_eq!(store.count_429_since(key, T0).unwrap(), 2);
    assert_eq!(store.count_429_since(key, T0 + 2_500_000).unwrap(), 1);
    let series = store.ratelimit_series(key, T0, 100).unwrap();
    let remaining: Vec<Option<u64>> = series.iter().map(|p| p.requests_remaining).collect();
    assert_eq!(remaining, vec![Some(90), Some(0), Some(40), Some(0)]);
    assert_eq!(
        store
            .ratelimit_series(key, T0 + 2_500_000, 100)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        store.ratelimit_series(key, T0, 1).unwrap()[0].at_us,
        T0 + 4_000_000,
        "the newest points"
    );
    let other = RateLimitKey::new("nope", None, None);
    assert_eq!(store.count_429_since(&other, 0).unwrap(), 0);
    assert!(store.ratelimit_series(&other, 0, 10).unwrap().is_empty());
}

/// A run written over several batches: its rounds numbered in start order, its calls
/// in round order, its counters the sums of its calls, its status its latest round's.
fn runs_number_their_rounds_and_roll_up_their_calls(engines: &Engines) {
    let store = engines.open(StoreOptions::default());
    let system = distinct_text("planner system prompt", 2_000);
    let rounds: Vec<CallRecord> = (1..=4u32)
        .map(|r| {
            let status = if r == 4 {
                CallStatus::Failed
            } else {
                CallStatus::Success
            };
            round_with_bodies("run-1", r, T0 + u64::from(r) * 10_000, &system, status)
        })
        .collect();
    let mut written = write(&store, rounds[..2].to_vec());
    written.extend(write(&store, rounds[2..].to_vec()));
    let rounds_of = |ids: Vec<CallRecord>| ids.iter().map(|c| c.round).collect::<Vec<_>>();
    assert_eq!(rounds_of(written.clone()), vec![1, 2, 3, 4]);
    let run = store.get_invocation("run-1").unwrap().unwrap();
    assert_eq!(run.rounds, 4);
    assert_eq!(run.status, Some(CallStatus::Failed));
    assert_eq!(run.started_at_us, T0 + 10_000);
    assert_eq!(run.agent.as_deref(), Some("planner"));
    assert_eq!(
        run.usage.input_tokens,
        Some(
            rounds
                .iter()
                .filter_map(|c| c.usage.input_tokens)
                .sum::<u64>()
        )
    );
    assert_eq!(
        run.cost_pusd,
        rounds
            .iter()
            .filter_map(|c| c.cost.as_ref())
            .map(|c| c.total_pusd)
            .sum::<u64>()
    );
    let ids: Vec<String> = rounds.iter().map(|c| c.id.clone()).collect();
    assert_eq!(store.invocation_call_ids("run-1").unwrap(), ids);
    let calls = store.invocation_calls("run-1").unwrap();
    assert_eq!(rounds_of(calls.clone()), vec![1, 2, 3, 4]);
    for (got, want) in calls.iter().zip(&rounds) {
        assert_eq!((&got.id, &got.request_body), (&want.id, &want.request_body));
    }
    let summary = store.invocation_summary("run-1").unwrap().unwrap();
    assert_eq!(
        (summary.rounds, summary.status),
        (4, Some(CallStatus::Failed))
    );
    let total = store.rollup_total(&RollupScope::All).unwrap();
    assert_eq!((total.calls, total.invocations, total.errors), (4, 1, 1));
    assert_eq!(
        store.record_tenant(true, "run-1").unwrap(),
        Some(Some("acme".into()))
    );
    assert_eq!(store.record_tenant(false, "c_nope").unwrap(), None);
    assert!(store.contains_call(&ids[0]).unwrap());
    assert_eq!(store.call_ids().unwrap(), ids);
    // Written again (a replayed capture log): nothing doubles.
    store.write_batch(&written[..1], &[]).unwrap();
    assert_eq!(store.call_count(), 4);
    assert_eq!(store.invocations_since(T0).unwrap().len(), 1);
}

/// A run read while a writer adds its rounds, one batch each, is read once
/// (`invocation_with_calls`) and consistently: its record and summary agree, its
/// calls hold every round the record counts (rounds 1..=n, no gap, bodies
/// included), and the round count it answers is the rounds listed; a tool call is
/// among the calls but no round.
fn a_run_is_read_once_with_every_round_it_counts(engines: &Engines) {
    const ROUNDS: u32 = 25;
    let store = engines.open(StoreOptions::default());
    assert!(store.invocation_with_calls("run-live").unwrap().is_none());
    let mut batches: Vec<Vec<CallRecord>> = (1..=ROUNDS)
        .map(|r| {
            let at = T0 + u64::from(r) * 10_000;
            vec![round_with_bodies(
                "run-live",
                r,
                at,
                "system",
                CallStatus::Success,
            )]
        })
        .collect();
    let mut tool = batches[0][0].clone();
    tool.id = "c_live_tool".into();
    tool.kind = "http".into();
    tool.started_at_us = T0 + u64::from(ROUNDS + 1) * 10_000;
    batches.push(vec![tool]);
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for batch in batches {
                write(&store, batch);
            }
        })
    };
    let mut reads = 0;
    loop {
        let finished = writer.is_finished();
        if let Some(run) = store.invocation_with_calls("run-live").unwrap() {
            let listed: Vec<u32> = run
                .calls
                .iter()
                .filter(|c| c.kind != "http")
                .map(|c| c.round)
                .collect();
            let counted = run.round_count();
            assert_eq!(listed, (1..=counted).collect::<Vec<_>>());
            assert!(
                run.record.rounds <= counted,
                "the record counts {} rounds, the calls read hold {counted}",
                run.record.rounds
            );
            assert_eq!(run.summary.rounds, run.record.rounds);
            assert!(run.calls.iter().all(|c| c.request_body.is_some()));
            reads += 1;
        }
        if finished {
            break;
        }
    }
    writer.join().unwrap();
    assert!(reads > 1, "{reads}");
    let run = store.invocation_with_calls("run-live").unwrap().unwrap();
    assert_eq!(
        (run.round_count(), run.record.rounds, run.calls.len()),
        (ROUNDS, ROUNDS, ROUNDS as usize + 1)
    );
    assert_eq!(run.summary.id, "run-live");
}

/// The audit log reads newest first, before a time; the capture-log position reads
/// back as set.
fn audit_entries_and_the_capture_log_position_are_kept(engines: &Engines) {
    let store = engines.open(StoreOptions::default());
    for (i, at) in [10u64, 20, 30].into_iter().enumerate() {
        store
            .append_audit(&llmtap::store::AuditEntry {
                at: format!("t{i}"),
                at_us: at,
                who: "admin".into(),
                role: "admin".into(),
                tenant: (i == 1).then(|| "acme".to_string()),
                action: "raw".into(),
                path: format!("/api/v1/calls/c{i}/raw"),
            })
            .unwrap();
    }
    let audit = store.audit_entries(None, 10).unwrap();
    assert_eq!(
        audit.iter().map(|e| e.at_us).collect::<Vec<_>>(),
        vec![30, 20, 10]
    );
    assert_eq!(audit[1].tenant.as_deref(), Some("acme"));
    assert_eq!(store.audit_entries(Some(30), 1).unwrap()[0].at_us, 20);
    assert_eq!(store.journal_applied().unwrap(), None);
    store.set_journal_applied(100).unwrap();
    assert_eq!(store.journal_applied().unwrap(), Some(100));
    store.set_journal_applied(4096).unwrap();
    assert_eq!(store.journal_applied().unwrap(), Some(4096));
    // A replaced log directory starts again below what the store held: the writer
    // replays it whole and records the new log's positions, which every engine keeps
    // as given (a position kept higher would replay the whole log at every start).
    store.set_journal_applied(512).unwrap();
    assert_eq!(store.journal_applied().unwrap(), Some(512));
    assert!(!store.contains_call("c_nope").unwrap());
    assert!(!store.delete_call("c_nope").unwrap());
}
