//! The PostgreSQL engine against a real server (`pg.rs`): migrations, partitions, the
//! pool's bound, TLS by rustls, several instances on one database, and what `llmtap
//! serve` does with `[store] url`. What every engine promises is in `conformance.rs`.

use super::pg;
use llmtap::config::{PostgresConfig, RawConfig, StoreEngine};
use llmtap::store::postgres::{self as engine, PgError, Pool, PoolOptions};
use std::time::Duration;

fn pool(url: &str, size: usize, ca_pem: Option<&str>) -> Pool {
    Pool::new(&PoolOptions {
        url: url.to_string(),
        size,
        wait: Duration::from_millis(300),
        ca_pem: ca_pem.map(str::to_string),
    })
    .unwrap()
}

async fn versions(client: &tokio_postgres::Client) -> Vec<i32> {
    client
        .query("SELECT version FROM llmtap_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn instances_starting_together_apply_each_migration_once() {
    let db = pg::fresh_db("migrate_race").await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = db.url();
        tasks.push(tokio::spawn(async move {
            let mut client = pg::connect(&url).await;
            engine::migrate(&mut client).await.unwrap()
        }));
    }
    let mut applied = Vec::new();
    for t in tasks {
        applied.extend(t.await.unwrap());
    }
    let all: Vec<i32> = engine::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(all, (1..=10).collect::<Vec<i32>>());
    applied.sort_unstable();
    assert_eq!(applied, all, "exactly one instance applied each version");
    let client = db.connect().await;
    assert_eq!(versions(&client).await, all);
    // Running it again changes nothing.
    let mut again = db.connect().await;
    assert!(engine::migrate(&mut again).await.unwrap().is_empty());
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY($1)",
            &[&vec![
                "calls",
                "chunks",
                "blobs",
                "invocations",
                "sessions",
                "rollups",
                "ratelimits",
                "audit",
            ]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 8);
}

/// `server::start` with `[store] url` on a database it must refuse; the error text.
async fn refused_start(url: &str) -> String {
    let dir = super::util::TempDir::new("pg-refused");
    let mut config = super::util::test_config(dir.path(), "");
    config.engine = StoreEngine::Postgres(engine_config(url));
    match llmtap::server::start(config).await {
        Ok(running) => {
            let _ = running.shutdown().await;
            panic!("llmtap started on a database it should refuse")
        }
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_schema_newer_than_the_binary_is_refused_untouched() {
    let db = pg::fresh_db("schema_newer").await;
    let mut client = db.connect().await;
    engine::migrate(&mut client).await.unwrap();
    client
        .execute(
            "INSERT INTO llmtap_schema (version, name) VALUES (99, 'from the future')",
            &[],
        )
        .await
        .unwrap();
    match engine::migrate(&mut client).await {
        Err(PgError::SchemaTooNew { found, known }) => {
            assert_eq!((found, known), (99, engine::migrate::latest_version()));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    // `llmtap serve` refuses to start on it, saying why.
    let err = refused_start(&db.url()).await;
    assert!(err.contains("newer than this llmtap knows"), "{err}");
    assert_eq!(
        versions(&client).await,
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99]
    );
}

#[tokio::test]
async fn serve_with_a_url_prepares_the_schema_and_records_into_postgresql() {
    use super::util::*;
    let db = pg::fresh_db("serve_url").await;
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"choices":[]}"#)).await;
    let dir = TempDir::new("pg-serve");
    let mut config = test_config(dir.path(), &provider_toml("mock", "openai", &mock.url()));
    config.engine = StoreEngine::Postgres(engine_config(&db.url()));
    let running = start_llmtap(config).await;
    let client = db.connect().await;
    assert_eq!(
        versions(&client).await,
        engine::MIGRATIONS
            .iter()
            .map(|m| m.version)
            .collect::<Vec<_>>()
    );
    // Yesterday to a week ahead, for each of the three partitioned tables.
    let parts: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'calls'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!((9..=10).contains(&parts), "{parts} partitions of calls");
    let got = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[("x-llmtap-agent", "on-pg")],
        "{}",
    )
    .await;
    wait_call(&running, &got.call_id()).await;
    // The call is a row of the database, not of a sled store in the data directory.
    let agent: String = client
        .query_one("SELECT agent FROM calls WHERE id = $1", &[&got.call_id()])
        .await
        .unwrap()
        .get(0);
    assert_eq!(agent, "on-pg");
    assert!(!dir.path().join("db").exists(), "no sled store was made");
    // The instance is named by its data directory, the same after a restart.
    let name = std::fs::read_to_string(dir.path().join("postgres-instance")).unwrap();
    assert_eq!(engine::instance_name(dir.path()).unwrap(), name);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn retention_drops_whole_day_partitions() {
    let db = pg::fresh_db("partitions").await;
    let mut client = db.connect().await;
    engine::migrate(&mut client).await.unwrap();
    let day = 86_400_000_000u64;
    let d0 = 20_000 * day; // 2024-10-04 00:00 UTC
    assert_eq!(
        engine::ensure_partitions(&client, d0, d0 + 2 * day)
            .await
            .unwrap(),
        6,
        "two days of calls, call_content and ratelimit_points"
    );
    assert_eq!(
        engine::ensure_partitions(&client, d0, d0 + 2 * day)
            .await
            .unwrap(),
        0
    );
    let insert = "INSERT INTO calls (started_us, id, invocation_id, round, provider, kind, latency_us, record, summary) \
                  VALUES ($1, $2, 'i', 1, 'openai', 'openai', 0, '{}', '{}')";
    for (t, id) in [
        (d0 + 5, "c_day0"),
        (d0 + day + 5, "c_day1"),
        (d0 - 3 * day, "c_old"),
    ] {
        client.execute(insert, &[&(t as i64), &id]).await.unwrap();
    }
    let place = |id: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT tableoid::regclass::text FROM calls WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(place("c_day0").await, "calls_p20241004");
    assert_eq!(place("c_day1").await, "calls_p20241005");
    assert_eq!(place("c_old").await, "calls_default");
    // A cutoff inside day 1 drops day 0 whole, keeps day 1, and deletes old default rows.
    assert_eq!(
        engine::drop_partitions_before(&client, d0 + day + 10)
            .await
            .unwrap(),
        3
    );
    let left: Vec<String> = client
        .query("SELECT id FROM calls ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec!["c_day1"]);
    // A day that already has rows in the default partition is left there, not attached.
    client
        .execute(insert, &[&((d0 + 9 * day) as i64), &"c_future"])
        .await
        .unwrap();
    assert_eq!(
        engine::ensure_partitions(&client, d0 + 9 * day, d0 + 10 * day)
            .await
            .unwrap(),
        2,
        "call_content and ratelimit_points only"
    );
    assert_eq!(place("c_future").await, "calls_default");
}

#[tokio::test]
async fn the_pool_never_opens_more_than_its_size() {
    let db = pg::fresh_db("pool_bound").await;
    let pool = pool(&db.url(), 2, None);
    let a = pool.get().await.unwrap();
    let b = pool.get().await.unwrap();
    match pool.get().await {
        Err(PgError::PoolTimeout { size: 2, .. }) => {}
        Err(other) => panic!("expected PoolTimeout, got {other}"),
        Ok(_) => panic!("a third connection from a pool of 2"),
    }
    let pid_a: i32 = a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(a);
    assert_eq!(pool.idle(), 1);
    // The returned connection is reused, not a new one.
    let c = pool.get().await.unwrap();
    let pid_c: i32 = c
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pid_a, pid_c);
    let backends: i64 = b
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(backends, 2);
}

#[tokio::test]
async fn tls_to_the_database_goes_through_rustls_and_checks_the_certificate() {
    let db = pg::fresh_db("tls").await;
    let ca = &pg::server().ca_pem;
    let url = format!("{}?sslmode=require", db.url_with_tls_mode_unset());
    let trusted = pool(&url, 1, Some(ca));
    let client = trusted.get().await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the connection is encrypted");
    // Without the test CA the server's certificate is not trusted: no silent fallback.
    let untrusted = pool(&url, 1, None);
    let err = untrusted.get().await.err().expect("untrusted certificate");
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        chain.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(chain.contains("UnknownIssuer"), "{chain}");
}

fn cell(calls: u64, cost: u64, hist: Vec<u64>) -> llmtap::store::index::RollupCell {
    llmtap::store::index::RollupCell {
        calls,
        errors: calls / 2,
        invocations: 1,
        cost_pusd: cost,
        input_tokens: 10 * calls,
        output_tokens: 20 * calls,
        latency_sum_us: 1000 * calls,
        hist,
        tool_calls: calls / 3,
        tool_failures: calls / 5,
    }
}

#[tokio::test]
async fn rollups_from_instances_writing_at_once_add_up_exactly() {
    use engine::rollups;
    use llmtap::store::index::BUCKET_US;
    use llmtap::store::plan::RollupDelta;
    use llmtap::store::BucketRange;
    let db = pg::fresh_db("rollups").await;
    engine::migrate(&mut db.connect().await).await.unwrap();
    let t0 = 20_000 * 96 * BUCKET_US; // a bucket boundary
                                      // Eight writers (as eight instances), 40 batches each, all hitting the same cells
                                      // in different orders: every increment must count, and none may deadlock.
    let pool = pool(&db.url(), 8, None);
    let mut tasks = Vec::new();
    for w in 0..8u64 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..40u64 {
                let mut deltas = vec![
                    RollupDelta {
                        scope: b"*".to_vec(),
                        bucket_us: None,
                        cell: cell(2, 5, vec![1, 0, 3]),
                    },
                    RollupDelta {
                        scope: b"*".to_vec(),
                        bucket_us: Some(t0 + (b % 3) * BUCKET_US + 17),
                        cell: cell(2, 5, vec![]),
                    },
                    RollupDelta {
                        scope: format!("A{}", w % 2).into_bytes(),
                        bucket_us: None,
                        cell: cell(1, 1, vec![0, 1]),
                    },
                ];
                if (w + b) % 2 == 1 {
                    deltas.reverse();
                }
                let mut client = pool.get().await.unwrap();
                let tx = client.transaction().await.unwrap();
                rollups::add(&tx, &deltas).await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let client = pool.get().await.unwrap();
    let all = rollups::total(&*client, b"*").await.unwrap();
    assert_eq!(all.calls, 8 * 40 * 2);
    assert_eq!(all.cost_pusd, 8 * 40 * 5);
    assert_eq!(all.invocations, 8 * 40);
    assert_eq!(all.hist, vec![320, 0, 960]);
    // Buckets: the first of the three 15-minute buckets got batches 0, 3, 6, ... (14 of 40).
    let first = rollups::range(&*client, b"*", BucketRange::starting_in(t0, t0 + BUCKET_US))
        .await
        .unwrap();
    assert_eq!(first.calls, 8 * 14 * 2);
    let three = rollups::range(
        &*client,
        b"*",
        BucketRange::starting_in(t0, t0 + 3 * BUCKET_US),
    )
    .await
    .unwrap();
    assert_eq!(three.calls, 8 * 40 * 2);
    // A range starting inside a bucket leaves that bucket out, as sled does.
    let later = rollups::range(
        &*client,
        b"*",
        BucketRange::starting_in(t0 + 1, t0 + 3 * BUCKET_US),
    )
    .await
    .unwrap();
    assert_eq!(later.calls, 8 * 26 * 2);
    let agents = rollups::scopes(&*client, b"A").await.unwrap();
    let names: Vec<_> = agents.iter().map(|(s, c)| (s.clone(), c.calls)).collect();
    assert_eq!(names, vec![(b"A0".to_vec(), 160), (b"A1".to_vec(), 160)]);
    assert_eq!(agents[0].1.hist, vec![0, 160]);

    // Totals saturate at the column's maximum instead of failing or wrapping.
    let huge = RollupDelta {
        scope: b"S".to_vec(),
        bucket_us: None,
        cell: cell(1, u64::MAX, vec![]),
    };
    rollups::add(&*client, std::slice::from_ref(&huge))
        .await
        .unwrap();
    // Two deltas of one cell in one batch are folded into one row of the upsert.
    rollups::add(&*client, &[huge.clone(), huge]).await.unwrap();
    let s = rollups::total(&*client, b"S").await.unwrap();
    assert_eq!((s.calls, s.cost_pusd), (3, i64::MAX as u64));
    assert_eq!(
        rollups::total(&*client, b"none").await.unwrap(),
        Default::default()
    );
}

/// `[store]` settings for a test database, read as `llmtap serve` reads them.
pub(super) fn engine_config(url: &str) -> PostgresConfig {
    PostgresConfig {
        url: RawConfig::from_toml(&format!("[store]\nurl = \"{url}\""))
            .unwrap()
            .validate(&Default::default())
            .map(|c| match c.engine {
                StoreEngine::Postgres(pg) => pg.url,
                StoreEngine::Sled => unreachable!(),
            })
            .unwrap(),
        pool_size: 2,
        ca_file: None,
    }
}

#[tokio::test]
async fn the_engine_behind_the_store_handle_answers_for_both_instances() {
    use llmtap::store::StoreOptions;
    let db = pg::fresh_db("engine_handle").await;
    let config = engine_config(&db.url());
    let (pool, version) = engine::prepare(&config).await.unwrap();
    assert_eq!(version, engine::migrate::latest_version());
    // Two instances on one database.
    let dir = super::util::TempDir::new("pg-engine");
    let open = |instance: &str| pg_store(&pool, dir.path(), instance, StoreOptions::default());
    let (a, b) = (open("a"), open("b"));
    engine::rollups::add(
        &*pool.get().await.unwrap(),
        &[llmtap::store::plan::RollupDelta {
            scope: b"*".to_vec(),
            bucket_us: None,
            cell: cell(3, 7, vec![0, 3]),
        }],
    )
    .await
    .unwrap();
    // The engine is synchronous, like sled's: called from a blocking thread.
    let (a2, b2) = (a.clone(), b.clone());
    tokio::task::spawn_blocking(move || {
        let total = b2.rollup_total(&llmtap::store::RollupScope::All).unwrap();
        assert_eq!((total.calls, total.cost_pusd), (3, 7));
        assert!(a2.rollup_agents(None).unwrap().is_empty());
        // Capture-log positions are per instance.
        assert_eq!(a2.journal_applied().unwrap(), None);
        a2.set_journal_applied(4096).unwrap();
        assert_eq!(a2.journal_applied().unwrap(), Some(4096));
        assert_eq!(b2.journal_applied().unwrap(), None);
        // Audit entries written by one instance are read by the other.
        for (i, at) in [10u64, 20].into_iter().enumerate() {
            a2.append_audit(&llmtap::store::AuditEntry {
                at: format!("t{i}"),
                at_us: at,
                who: "admin".into(),
                role: "admin".into(),
                tenant: None,
                action: "raw".into(),
                path: format!("/api/v1/calls/c{i}/raw"),
            })
            .unwrap();
        }
        let audit = b2.audit_entries(None, 10).unwrap();
        assert_eq!(
            audit.iter().map(|e| e.at_us).collect::<Vec<_>>(),
            vec![20, 10]
        );
        assert_eq!(b2.audit_entries(Some(20), 10).unwrap().len(), 1);
        assert!(!a2.contains_call("c_nope").unwrap());
        assert_eq!(a2.call_count(), 0);
        // A call that is not there is not deleted.
        assert!(!a2.delete_call("c_1").unwrap());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn batch_notices_reach_other_instances_only_when_committed() {
    use engine::notify;
    let db = pg::fresh_db("notify").await;
    let writer_pool = pool(&db.url(), 2, None);
    let mut listener_b = notify::listen(&pool(&db.url(), 1, None)).await.unwrap();
    let mut listener_c = notify::listen(&pool(&db.url(), 1, None)).await.unwrap();
    let mut listener_a = notify::listen(&pool(&db.url(), 1, None)).await.unwrap();
    let mut client = writer_pool.get().await.unwrap();
    // A batch rolled back is never announced.
    let tx = client.transaction().await.unwrap();
    let rolled_back = notify::payload("a", &["c_rolled_back".into()], &[]);
    notify::notify(&tx, &rolled_back).await.unwrap();
    tx.rollback().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let text = notify::payload("a", &["c_1".into(), "c_2".into()], &["run-1".into()]);
    notify::notify(&tx, &text).await.unwrap();
    // Nothing is delivered before the commit.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), listener_b.recv())
            .await
            .is_err(),
        "a notice arrived before its batch committed"
    );
    tx.commit().await.unwrap();
    for listener in [&mut listener_a, &mut listener_b, &mut listener_c] {
        let notice = tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .expect("notice after commit")
            .expect("listener open");
        assert_eq!(notice.instance, "a");
        assert_eq!(notice.calls, vec!["c_1", "c_2"]);
        assert_eq!(notice.invocations, vec!["run-1"]);
        // The rolled-back batch's notice never comes.
        assert!(listener.try_recv().is_err());
    }
}

/// A store handle of instance `name` on the database, its engine context in `dir`:
/// what `serve` opens with `[store] url`.
pub(super) fn pg_store(
    pool: &Pool,
    dir: &std::path::Path,
    name: &str,
    options: llmtap::store::StoreOptions,
) -> llmtap::store::Store {
    let (pool, name) = (pool.clone(), name.to_string());
    let engine_options = options.clone();
    llmtap::store::Store::open_engine(
        llmtap::store::EngineContext::new(dir, &options),
        options,
        move |context| {
            Ok(std::sync::Arc::new(engine::PostgresStore::new(
                pool.clone(),
                name.clone(),
                context,
                &engine_options,
            )?))
        },
    )
    .unwrap()
}

/// An engine of instance `name` on the database, as `serve` makes one.
fn pg_engine(
    pool: &Pool,
    name: &str,
    options: &llmtap::store::StoreOptions,
) -> engine::PostgresStore {
    let dir = std::env::temp_dir();
    let context = llmtap::store::EngineContext::new(&dir, options);
    engine::PostgresStore::new(pool.clone(), name.into(), &context, options).unwrap()
}

/// Text that does not compress away: `n` bytes of hex from a seed.
pub(super) fn distinct_text(seed: &str, n: usize) -> String {
    let mut out = String::with_capacity(n + 64);
    let mut i = 0u64;
    while out.len() < n {
        let d = ring::digest::digest(&ring::digest::SHA256, format!("{seed}{i}").as_bytes());
        out.extend(d.as_ref().iter().map(|b| format!("{b:02x}")));
        i += 1;
    }
    out.truncate(n);
    out
}

/// A synthetic round of `run` with an OpenAI chat request above the inline limit
/// (its system prompt, shared by every round, is content-addressed) and a small answer.
pub(super) fn round_with_bodies(
    run: &str,
    round: u32,
    started_us: u64,
    system: &str,
    status: llmtap::record::CallStatus,
) -> llmtap::record::CallRecord {
    let mut call = super::synthetic::synthetic_call(
        run,
        round,
        started_us,
        "planner",
        "acme",
        Some("s-1"),
        0,
        status,
        100 * u64::from(round) + 1,
        7,
    );
    call.request_body = Some(
        serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": format!("step {round} at {started_us}")},
            ],
        })
        .to_string(),
    );
    call.response_body = Some(format!(
        "{{\"id\":\"chatcmpl-{started_us}\",\"choices\":[]}}"
    ));
    // The response view would be parsed again from the bodies; these are not a real
    // exchange, so keep only the request view (stored as given: no endpoint).
    call.response = None;
    call
}

#[tokio::test]
async fn a_run_written_through_two_instances_reads_back_whole_from_either() {
    use llmtap::record::CallStatus;
    use llmtap::store::index::CallText;
    use llmtap::store::summary::CallSummary;
    use llmtap::store::{Engine, StoreOptions};
    let db = pg::fresh_db("two_writers").await;
    let (pool, _) = engine::prepare(&engine_config(&db.url())).await.unwrap();
    let t0 = 1_780_000_000_000_000u64;
    let system = distinct_text("planner system prompt", 12_000);
    let first = round_with_bodies("run-1", 1, t0, &system, CallStatus::Success);
    // The second round went through instance b, which reaches the database last.
    let second = round_with_bodies("run-1", 1, t0 + 10_000, &system, CallStatus::Failed);
    let third = round_with_bodies("run-1", 2, t0 + 20_000, &system, CallStatus::Success);
    // Stored as round 2 (by start time): b's batch renumbers the run under its lock.
    let summary_of_second = serde_json::to_value(CallSummary::from_record(&{
        let mut moved = second.clone();
        moved.round = 2;
        moved
    }))
    .unwrap();
    let sent = [first.clone(), second.clone(), third.clone()];
    let ids: Vec<String> = sent.iter().map(|c| c.id.clone()).collect();
    let options = StoreOptions::default();
    let (a, b) = (
        pg_engine(&pool, "a", &options),
        pg_engine(&pool, "b", &options),
    );
    let expected_ids = ids.clone();
    let (a, b) = tokio::task::spawn_blocking(move || {
        a.write_batch(&[first.clone(), third.clone()], &[]).unwrap();
        b.write_batch(std::slice::from_ref(&second), &[]).unwrap();
        // a replays its first call (as a rewound capture log would): nothing doubles.
        a.write_batch(std::slice::from_ref(&first), &[]).unwrap();
        assert_eq!((a.call_count(), b.call_count()), (3, 3));
        for store in [&a, &b] {
            assert_eq!(store.invocation_call_ids("run-1").unwrap(), expected_ids);
            assert_eq!(store.call_ids().unwrap(), expected_ids);
            let inv = store.get_invocation("run-1").unwrap().unwrap();
            assert_eq!(inv.rounds, 3);
            // The latest-started round's status, though an earlier one was written last.
            assert_eq!(inv.status, Some(CallStatus::Success));
            let tokens: u64 = sent.iter().filter_map(|c| c.usage.input_tokens).sum();
            assert_eq!(inv.usage.input_tokens, Some(tokens));
            let cost: u64 = sent
                .iter()
                .filter_map(|c| c.cost.as_ref())
                .map(|c| c.total_pusd)
                .sum();
            assert_eq!(inv.cost_pusd, cost);
            assert_eq!(
                (inv.started_at_us, inv.agent.as_deref()),
                (t0, Some("planner"))
            );
            let summary = store.invocation_summary("run-1").unwrap().unwrap();
            assert_eq!(
                (summary.rounds, summary.status),
                (3, Some(CallStatus::Success))
            );
            let calls = store.invocation_calls("run-1").unwrap();
            assert_eq!(
                calls.iter().map(|c| c.round).collect::<Vec<_>>(),
                vec![1, 2, 3]
            );
            for (got, want) in calls.iter().zip(&sent) {
                assert_eq!(got.id, want.id);
                assert_eq!(got.request_body, want.request_body);
                assert_eq!(got.response_body, want.response_body);
                assert_eq!(got.request, want.request);
            }
            let second = store.get_call(&sent[1].id).unwrap().unwrap();
            assert_eq!(
                second.round, 2,
                "numbered by start time, not by the writing instance"
            );
            assert_eq!(store.get_call_meta(&sent[1].id).unwrap().unwrap().round, 2);
            assert_eq!(
                store.get_raw(&sent[2].id, false).unwrap().unwrap(),
                sent[2].request_body.clone().unwrap().into_bytes()
            );
            assert_eq!(
                store.get_raw(&sent[2].id, true).unwrap().unwrap(),
                sent[2].response_body.clone().unwrap().into_bytes()
            );
            assert_eq!(
                store.call_text(&sent[0].id).unwrap(),
                CallText::of(&sent[0])
            );
            let total = store
                .rollup_total(&llmtap::store::RollupScope::All)
                .unwrap();
            assert_eq!((total.calls, total.invocations, total.errors), (3, 1, 1));
            assert_eq!(
                store.record_tenant(true, "run-1").unwrap(),
                Some(Some("acme".into()))
            );
            assert_eq!(store.record_tenant(false, "c_nope").unwrap(), None);
            assert!(store.get_call("c_nope").unwrap().is_none());
            assert!(store.get_invocation("run-2").unwrap().is_none());
        }
        // The metadata is what sled keeps of a call: the one shared stored form.
        let meta = a.get_call_meta(&sent[1].id).unwrap().unwrap();
        let mut want = llmtap::store::stored::metadata_only(&sent[1]);
        want.round = 2;
        assert_eq!(
            serde_json::to_value(&meta).unwrap(),
            serde_json::to_value(want).unwrap()
        );
        assert!(meta.request_body.is_none() && meta.response_body.is_none());
        (a, b)
    })
    .await
    .unwrap();
    drop((a, b));
    let client = db.connect().await;
    let row = client
        .query_one(
            "SELECT summary, round, tenant, session_id, input_tokens FROM calls WHERE id = $1",
            &[&ids[1]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, serde_json::Value>(0), summary_of_second);
    assert_eq!(
        row.get::<_, i32>(1),
        2,
        "the round by start time, written by the batch that stored the run's late call"
    );
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("acme"));
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("s-1"));
    // The shared system prompt is stored once for the three calls (12 KB of hex
    // compresses to about 6 KB; three copies would be 18 KB).
    let chunk_bytes: i64 = client
        .query_one(
            "SELECT coalesce(sum(octet_length(value)), 0)::bigint FROM chunks",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        chunk_bytes > 3_000 && chunk_bytes < 9_000,
        "{chunk_bytes} bytes of chunks"
    );
    let manifests: i64 = client
        .query_one("SELECT count(*) FROM call_content", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(manifests, 3);
}

/// `(addr, refs)` of every chunk, in address order.
async fn chunk_refs(client: &tokio_postgres::Client) -> Vec<(Vec<u8>, i64)> {
    client
        .query("SELECT addr, refs FROM chunks ORDER BY addr", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn with_a_key_content_in_postgresql_is_sealed_and_reads_back() {
    use llmtap::record::CallStatus;
    use llmtap::store::{Engine, Keyring, StoreOptions};
    let db = pg::fresh_db("sealed").await;
    let (pool, _) = engine::prepare(&engine_config(&db.url())).await.unwrap();
    let system = distinct_text("secret system prompt", 8_000);
    let call = round_with_bodies(
        "run-s",
        1,
        1_780_000_000_000_000,
        &system,
        CallStatus::Success,
    );
    let options = StoreOptions {
        keys: Some(std::sync::Arc::new(
            Keyring::from_text("5f0c0e8d7a6b4c3d2e1f00112233445566778899aabbccddeeff001122334455")
                .unwrap(),
        )),
        ..StoreOptions::default()
    };
    let mut call = call;
    let variable_secret = "KIWI-VARIABLE-5521";
    call.metadata.user_prompt = Some("ask@v2".into());
    call.metadata.user_prompt_variables = Some(serde_json::json!({"secret": variable_secret}));
    let store = pg_engine(&pool, "a", &options);
    let plain = pg_engine(&pool, "b", &StoreOptions::default());
    let sent = call.clone();
    tokio::task::spawn_blocking(move || {
        assert!(store.encrypted());
        store.write_batch(std::slice::from_ref(&sent), &[]).unwrap();
        let back = store.get_call(&sent.id).unwrap().unwrap();
        assert_eq!(back.request_body, sent.request_body);
        assert_eq!(back.metadata.user_prompt, sent.metadata.user_prompt);
        assert_eq!(
            back.metadata.user_prompt_variables,
            sent.metadata.user_prompt_variables
        );
        // An instance without the key cannot open it, and says so.
        assert!(plain.get_call(&sent.id).is_err());
    })
    .await
    .unwrap();
    let client = db.connect().await;
    let needle = &system[..64];
    for (table, column) in [("chunks", "value"), ("call_content", "manifest")] {
        let rows = client
            .query(&format!("SELECT {column} FROM {table}"), &[])
            .await
            .unwrap();
        assert!(!rows.is_empty(), "{table} holds the call's content");
        for row in rows {
            let value: Vec<u8> = row.get(0);
            assert!(
                !String::from_utf8_lossy(&value).contains(needle),
                "{table} holds prompt text in the clear"
            );
        }
    }
    // The clear metadata names the user prompt but holds none of its variables.
    let record: serde_json::Value = client
        .query_one("SELECT record FROM calls", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(record["metadata"]["user_prompt"], "ask@v2");
    assert!(!record.to_string().contains(variable_secret), "{record}");
}

/// Calls of 14 runs with varied facets, rounds interleaved in time, written in start
/// order (so the writer's rounds and start-order rounds agree).
pub(super) fn varied_runs(t0: u64) -> Vec<llmtap::record::CallRecord> {
    varied_runs_apart(t0, 700_000)
}

/// `varied_runs` with runs starting `run_gap_us` apart.
fn varied_runs_apart(t0: u64, run_gap_us: u64) -> Vec<llmtap::record::CallRecord> {
    use llmtap::record::CallStatus;
    let statuses = [
        CallStatus::Success,
        CallStatus::Failed,
        CallStatus::Success,
        CallStatus::RateLimited,
    ];
    let mut calls = Vec::new();
    for run in 0..14u64 {
        let rounds = 1 + run % 4;
        for round in 1..=rounds {
            let started = t0 + run * run_gap_us + round * 1_500_000;
            let mut call = super::synthetic::synthetic_call(
                &format!("run-{run}"),
                round as u32,
                started,
                ["planner", "coder", "critic"][(run % 3) as usize],
                ["acme", "globex"][(run % 2) as usize],
                (run % 3 != 0).then(|| format!("s-{}", run % 4)).as_deref(),
                (run + round) as usize,
                statuses[((run + round) % 4) as usize],
                50 * run + round,
                7 + round,
            );
            if run % 5 == 1 {
                call.metadata
                    .properties
                    .insert("env".into(), ["prod", "dev"][(round % 2) as usize].into());
            }
            calls.push(call);
        }
    }
    // Two calls of different runs start in the same microsecond: the id breaks the tie.
    let mut twin = super::synthetic::synthetic_call(
        "run-twin",
        1,
        calls[3].started_at_us,
        "planner",
        "acme",
        None,
        2,
        CallStatus::Success,
        9,
        9,
    );
    twin.id = format!("{}z", calls[3].id);
    calls.push(twin);
    calls.sort_by(|a, b| (a.started_at_us, &a.id).cmp(&(b.started_at_us, &b.id)));
    calls
}

/// Every page of a list, walked by cursor: (items, has_more, next, total, lower bound)
/// per page, as JSON.
fn walk<T: serde::Serialize>(
    name: &str,
    list: impl Fn(
        &llmtap::store::PageRequest,
    ) -> Result<llmtap::store::Page<T>, llmtap::store::StoreError>,
    limit: usize,
) -> Vec<serde_json::Value> {
    use llmtap::store::PageRequest;
    let page = |request: &PageRequest| list(request).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut request = PageRequest {
        limit,
        count_total: true,
        ..PageRequest::default()
    };
    let mut pages = Vec::new();
    loop {
        let got = page(&request);
        pages.push(serde_json::json!({
            "items": serde_json::to_value(&got.items).unwrap(),
            "has_more": got.has_more,
            "next": got.next.as_ref().map(|p| (p.time_us, p.id.clone())),
            "total": got.total,
            "lower_bound": got.total_is_lower_bound,
        }));
        match got.next {
            Some(next) if pages.len() < 50 => request.after = Some(next),
            _ => break,
        }
    }
    // One page by offset, as `?offset=` asks.
    let got = page(&PageRequest {
        limit: 4,
        offset: 3,
        count_total: false,
        ..PageRequest::default()
    });
    pages.push(serde_json::to_value(&got.items).unwrap());
    pages
}

#[tokio::test]
async fn list_pages_totals_and_cursors_on_postgresql_are_those_of_sled() {
    lists_match_sled("lists", 700_000).await;
}

/// The same over five days (a run every seven hours), so pages span day
/// partitions, windows cut days, and the per-day facet counts bound the pages.
#[tokio::test]
async fn list_pages_over_several_days_on_postgresql_are_those_of_sled() {
    lists_match_sled("lists-days", 7 * 3_600_000_000).await;
}

async fn lists_match_sled(name: &str, run_gap_us: u64) {
    use llmtap::record::roll_up;
    use llmtap::store::summary::{tag, Filter};
    use llmtap::store::{Engine, StoreOptions};
    let db = pg::fresh_db(name).await;
    let (pool, _) = engine::prepare(&engine_config(&db.url())).await.unwrap();
    let t0 = 1_780_000_000_000_000u64;
    let calls = varied_runs_apart(t0, run_gap_us);
    let last = calls.last().map(|c| c.started_at_us).unwrap();
    let dir = super::util::TempDir::new(name);
    let model = calls[0].model.clone().unwrap();
    let eq = |pairs: &[(u8, &[&str])]| Filter {
        eq: pairs
            .iter()
            .map(|(t, vs)| (*t, vs.iter().map(|v| v.to_string()).collect()))
            .collect(),
        ..Filter::default()
    };
    let filters: Vec<(&str, Filter)> = vec![
        ("everything", Filter::default()),
        ("tenant", eq(&[(tag::TENANT, &["acme"])])),
        ("agent", eq(&[(tag::AGENT, &["coder"])])),
        (
            "tenant and agent",
            eq(&[(tag::TENANT, &["globex"]), (tag::AGENT, &["critic"])]),
        ),
        ("model", eq(&[(tag::MODEL, &[model.as_str()])])),
        ("provider", eq(&[(tag::PROVIDER, &["anthropic"])])),
        ("one status", eq(&[(tag::STATUS, &["failed"])])),
        (
            "two statuses",
            eq(&[(tag::STATUS, &["success", "rate_limited"])]),
        ),
        ("session", eq(&[(tag::SESSION, &["s-1"])])),
        ("kind", eq(&[(tag::KIND, &["openai"])])),
        (
            "time range",
            Filter {
                from_us: Some(t0 + 2 * run_gap_us + 3_000_000),
                to_us: Some(t0 + 4 * run_gap_us + 9_000_000),
                ..Filter::default()
            },
        ),
        (
            "with a session",
            Filter {
                has_session: Some(true),
                ..Filter::default()
            },
        ),
        (
            "without a session",
            Filter {
                has_session: Some(false),
                ..Filter::default()
            },
        ),
        (
            "min cost",
            Filter {
                min_cost_pusd: Some(20_000_000),
                ..Filter::default()
            },
        ),
        (
            "property",
            Filter {
                properties: vec![("env".into(), "prod".into())],
                ..Filter::default()
            },
        ),
        (
            "tenant and status",
            eq(&[(tag::TENANT, &["acme"]), (tag::STATUS, &["success"])]),
        ),
        (
            "middle of the time",
            Filter {
                from_us: Some(t0 + (last - t0) / 3),
                to_us: Some(t0 + 2 * (last - t0) / 3),
                ..Filter::default()
            },
        ),
        (
            "agent since the middle",
            Filter {
                from_us: Some(t0 + (last - t0) / 2),
                eq: vec![(tag::AGENT, vec!["planner".into()])],
                ..Filter::default()
            },
        ),
        (
            "agent with a session",
            Filter {
                has_session: Some(true),
                eq: vec![(tag::AGENT, vec!["coder".into(), "critic".into()])],
                ..Filter::default()
            },
        ),
        (
            "agent, tenant and status",
            eq(&[
                (tag::AGENT, &["planner"]),
                (tag::TENANT, &["acme"]),
                (tag::STATUS, &["success", "failed"]),
            ]),
        ),
        (
            "text",
            Filter {
                text: Some("ticket #0 for acme".into()),
                ..Filter::default()
            },
        ),
        (
            "text and agent",
            Filter {
                text: Some("ticket".into()),
                eq: vec![(tag::AGENT, vec!["coder".into()])],
                ..Filter::default()
            },
        ),
    ];
    let options = StoreOptions::default();
    let pg_store = pg_engine(&pool, "a", &options);
    let sled_dir = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let sled = llmtap::store::Store::open_with(&sled_dir, options).unwrap();
        for batch in calls.chunks(9) {
            let mut runs = std::collections::HashMap::new();
            for c in batch {
                let existing = runs
                    .remove(&c.invocation_id)
                    .or_else(|| sled.get_invocation(&c.invocation_id).unwrap());
                runs.insert(c.invocation_id.clone(), roll_up(existing, c));
            }
            let runs: Vec<_> = runs.into_values().collect();
            sled.write_batch(batch, &runs).unwrap();
            pg_store.write_batch(batch, &[]).unwrap();
        }
        for (name, filter) in &filters {
            let on_sled = walk(name, |r| sled.list_calls(filter, r), 5);
            let on_pg = walk(name, |r| pg_store.list_calls(filter, r), 5);
            assert!(
                on_sled[0]["total"].as_u64().unwrap() > 0,
                "calls, {name}: the filter matches something"
            );
            assert_eq!(on_pg, on_sled, "calls, {name}");
            let on_sled = walk(name, |r| sled.list_invocations(filter, r), 3);
            let on_pg = walk(name, |r| pg_store.list_invocations(filter, r), 3);
            assert_eq!(on_pg, on_sled, "runs, {name}");
        }
    })
    .await
    .unwrap();
    // The counts the writer kept batch by batch are those the migration computes
    // from the stored calls (what an upgraded store starts from).
    let client = db.connect().await;
    async fn counts(client: &tokio_postgres::Client) -> Vec<(String, i64, i64)> {
        client
            .query(
                "SELECT facet, day_us, n FROM call_facet_days WHERE n <> 0 \
                 UNION ALL SELECT a || ' & ' || b, day_us, n FROM call_facet_pair_days \
                 WHERE n <> 0 ORDER BY 1, 2",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
    let kept = counts(&client).await;
    assert!(kept.len() > 20, "{kept:?}");
    assert!(
        kept.contains(&("t=".to_string(), (t0 - t0 % 86_400_000_000) as i64, {
            let first_day: Vec<_> = varied_runs_apart(t0, run_gap_us)
                .into_iter()
                .filter(|c| c.started_at_us < t0 - t0 % 86_400_000_000 + 86_400_000_000)
                .collect();
            first_day.len() as i64
        }))
    );
    assert!(
        kept.iter().any(|(f, _, _)| f.contains(" & ")),
        "pairs counted"
    );
    let singles = include_str!("../../src/store/postgres/migrations/0005_facet_counts.sql");
    let pairs = include_str!("../../src/store/postgres/migrations/0006_facet_pair_counts.sql");
    let backfill = |sql: &'static str, table: &str| {
        &sql[sql
            .find(&format!("INSERT INTO {table}"))
            .expect("the migration fills the counts")..]
    };
    client
        .batch_execute(&format!(
            "TRUNCATE call_facet_days, call_facet_pair_days; {} {}",
            backfill(singles, "call_facet_days"),
            backfill(pairs, "call_facet_pair_days")
        ))
        .await
        .unwrap();
    assert_eq!(counts(&client).await, kept);
}

/// Round `round` of a conversation: the system prompt, the earlier turns, a new
/// user message.
fn conversation_round(run: &str, round: u32, t0: u64, system: &str) -> llmtap::record::CallRecord {
    let started = t0 + u64::from(round) * 1_000_000;
    let mut call = round_with_bodies(
        run,
        round,
        started,
        system,
        llmtap::record::CallStatus::Success,
    );
    let mut messages = vec![serde_json::json!({"role": "system", "content": system})];
    for turn in 1..=round {
        messages.push(serde_json::json!({
            "role": "user",
            "content": distinct_text(&format!("{run} question {turn}"), 600),
        }));
        if turn < round {
            messages.push(serde_json::json!({
                "role": "assistant",
                "content": distinct_text(&format!("{run} answer {turn}"), 600),
            }));
        }
    }
    call.request_body =
        Some(serde_json::json!({"model": "gpt-4o-mini", "messages": messages}).to_string());
    call
}

/// A round's history names the previous round's stored history and holds only
/// what it added, on PostgreSQL as on sled, though each round is its own batch
/// (before, a batch could not see what earlier batches stored and cut every round's
/// history into one chunk per message).
#[tokio::test]
async fn rounds_written_batch_by_batch_build_on_the_stored_history_as_on_sled() {
    use llmtap::store::{Engine, StoreOptions};
    let db = pg::fresh_db("history").await;
    let (pool, _) = engine::prepare(&engine_config(&db.url())).await.unwrap();
    let t0 = 1_780_000_000_000_000u64;
    let system = distinct_text("long system prompt", 4_000);
    let rounds: Vec<_> = (1..=8)
        .flat_map(|r| {
            [
                conversation_round("conv-a", r, t0, &system),
                conversation_round("conv-b", r, t0 + 500, &system),
            ]
        })
        .collect();
    let dir = super::util::TempDir::new("history-sled");
    let sled_dir = dir.path().to_path_buf();
    let pg_store = pg_engine(&pool, "a", &StoreOptions::default());
    tokio::task::spawn_blocking(move || {
        let sled = llmtap::store::Store::open_with(&sled_dir, StoreOptions::default()).unwrap();
        for call in &rounds {
            sled.write_batch(std::slice::from_ref(call), &[]).unwrap();
            pg_store
                .write_batch(std::slice::from_ref(call), &[])
                .unwrap();
        }
        let (on_sled, on_pg) = (
            sled.content_usage().unwrap(),
            pg_store.content_usage().unwrap(),
        );
        assert_eq!(
            on_pg.chunks, on_sled.chunks,
            "pg {on_pg:?}\nsled {on_sled:?}"
        );
        // The system prompt, each message once, one history chunk per round, and
        // the small response bodies: far fewer than a chunk per message per round.
        assert!(on_pg.chunks <= 75, "{on_pg:?}");
        for call in &rounds {
            let back = pg_store.get_call(&call.id).unwrap().unwrap();
            assert_eq!(back.request_body, call.request_body, "{}", call.id);
        }
        // Storage figures count every table, partitioned or not.
        let usage = pg_store.tree_usage().unwrap();
        for table in [
            "calls",
            "call_content",
            "chunks",
            "invocations",
            "call_facet_days",
        ] {
            assert!(
                usage
                    .iter()
                    .any(|(name, _, bytes)| name == table && *bytes > 0),
                "{table}: {usage:?}"
            );
        }
    })
    .await
    .unwrap();
    let client = db.connect().await;
    let (stored, recounted) = recount_refs(&client).await;
    assert_eq!(stored, recounted);
}

/// Past the 10,000 a capped count stops at, a total over facets sled's facet cache
/// counts is exact on both engines, for calls (pair counts) and for runs (a count of
/// them all), and the same.
#[tokio::test]
async fn totals_past_the_count_cap_are_exact_as_on_sled() {
    use llmtap::record::CallStatus;
    use llmtap::store::summary::{tag, Filter};
    use llmtap::store::PageRequest;
    use llmtap::store::{Engine, StoreOptions};
    let db = pg::fresh_db("past_cap").await;
    let (pool, _) = engine::prepare(&engine_config(&db.url())).await.unwrap();
    let t0 = 1_780_000_000_000_000u64;
    let calls: Vec<_> = (0..10_300u64)
        .map(|i| {
            super::synthetic::synthetic_call(
                &format!("run-{i}"),
                1,
                t0 + i * 1_000,
                "planner",
                "acme",
                None,
                0,
                if i % 100 == 0 {
                    CallStatus::Failed
                } else {
                    CallStatus::Success
                },
                10,
                3,
            )
        })
        .collect();
    let model = calls[0].model.clone().unwrap();
    let dir = super::util::TempDir::new("past-cap-sled");
    let sled_dir = dir.path().to_path_buf();
    let pg_store = pg_engine(&pool, "a", &StoreOptions::default());
    tokio::task::spawn_blocking(move || {
        let sled = llmtap::store::Store::open_with(&sled_dir, StoreOptions::default()).unwrap();
        for batch in calls.chunks(2_000) {
            let runs: Vec<_> = batch
                .iter()
                .map(|c| llmtap::record::roll_up(None, c))
                .collect();
            sled.write_batch(batch, &runs).unwrap();
            pg_store.write_batch(batch, &[]).unwrap();
        }
        let request = PageRequest {
            limit: 5,
            count_total: true,
            ..PageRequest::default()
        };
        let filters = [
            Filter {
                eq: vec![(tag::MODEL, vec![model.clone()])],
                ..Filter::default()
            },
            Filter {
                eq: vec![
                    (tag::MODEL, vec![model.clone()]),
                    (tag::STATUS, vec!["success".into()]),
                ],
                ..Filter::default()
            },
            Filter {
                eq: vec![
                    (tag::MODEL, vec![model.clone()]),
                    (tag::PROVIDER, vec!["openai".into()]),
                    (tag::AGENT, vec!["planner".into()]),
                ],
                has_session: Some(false),
                ..Filter::default()
            },
        ];
        for filter in &filters {
            let (s, p) = (
                sled.list_calls(filter, &request).unwrap(),
                pg_store.list_calls(filter, &request).unwrap(),
            );
            assert!(
                s.total > 10_000 && !s.total_is_lower_bound,
                "{filter:?}: {}",
                s.total
            );
            assert_eq!(
                (p.total, p.total_is_lower_bound),
                (s.total, false),
                "calls {filter:?}"
            );
            let (s, p) = (
                sled.list_invocations(filter, &request).unwrap(),
                pg_store.list_invocations(filter, &request).unwrap(),
            );
            assert_eq!(
                (p.total, p.total_is_lower_bound),
                (s.total, s.total_is_lower_bound),
                "runs {filter:?}"
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_nul_character_in_a_value_is_replaced_and_fails_nothing() {
    use llmtap::record::CallStatus;
    use llmtap::store::{Engine, StoreOptions};
    let db = pg::fresh_db("nul").await;
    let (pool, _) = engine::prepare(&engine_config(&db.url())).await.unwrap();
    let t0 = 1_780_000_000_000_000u64;
    let plain = super::synthetic::synthetic_call(
        "run-nul",
        1,
        t0,
        "bot",
        "acme",
        Some("s-nul"),
        0,
        CallStatus::Success,
        5,
        5,
    );
    // PostgreSQL refuses NUL in text and jsonb; an agent can send one in any string.
    let mut odd = super::synthetic::synthetic_call(
        "run-nul",
        2,
        t0 + 1000,
        "bot",
        "acme",
        Some("s-nul"),
        0,
        CallStatus::Failed,
        5,
        5,
    );
    odd.model = Some("gpt\0-4o".into());
    odd.metadata.agent = Some("b\0t".into());
    odd.metadata.properties.insert("k\0".into(), "v\0".into());
    odd.parse_notes.push("note with \0 inside".into());
    odd.request_body = Some("{\"model\":\"gpt\\u0000-4o\",\"messages\":[]}".into());
    let store = pg_engine(&pool, "a", &StoreOptions::default());
    let (plain_id, odd_id) = (plain.id.clone(), odd.id.clone());
    tokio::task::spawn_blocking(move || {
        store.write_batch(&[plain, odd], &[]).unwrap();
        assert!(store.get_call(&plain_id).unwrap().is_some());
        let back = store
            .get_call(&odd_id)
            .unwrap()
            .expect("the odd call is stored");
        assert_eq!(back.model.as_deref(), Some("gpt\u{FFFD}-4o"));
        assert_eq!(back.metadata.agent.as_deref(), Some("b\u{FFFD}t"));
        assert_eq!(back.metadata.properties["k\u{FFFD}"], "v\u{FFFD}");
        assert!(back
            .parse_notes
            .iter()
            .any(|n| n == "note with \u{FFFD} inside"));
        // Bodies are content, kept byte for byte.
        assert_eq!(
            store.get_raw(&odd_id, false).unwrap().unwrap(),
            b"{\"model\":\"gpt\\u0000-4o\",\"messages\":[]}"
        );
        let run = store.get_invocation("run-nul").unwrap().unwrap();
        assert_eq!(run.rounds, 2);
    })
    .await
    .unwrap();
}

/// Period keys as the `content_keys` table holds them now (a copy: destroying a
/// key in the database does not reach it).
struct KeysAsRead(std::collections::HashMap<u32, Vec<u8>>);

impl llmtap::store::shred::KeyVault for KeysAsRead {
    fn load(&self, slot: u32) -> Result<Option<Vec<u8>>, llmtap::store::StoreError> {
        Ok(self.0.get(&slot).cloned())
    }
    fn create(&self, _: u32, _: &[u8]) -> Result<Vec<u8>, llmtap::store::StoreError> {
        panic!("a reading codec never seals")
    }
    fn destroy(&self, _: u32) -> Result<(), llmtap::store::StoreError> {
        Ok(())
    }
}

/// A codec that opens content with the period keys the database holds now.
async fn codec_with_vault_of(client: &tokio_postgres::Client) -> llmtap::store::content::Codec {
    let keys = client
        .query("SELECT slot, key FROM content_keys", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u32, r.get::<_, Vec<u8>>(1)))
        .collect();
    llmtap::store::content::Codec {
        keys: None,
        zstd_level: 3,
        periods: Some(std::sync::Arc::new(llmtap::store::shred::PeriodKeys::new(
            3600,
            None,
            Box::new(KeysAsRead(keys)),
        ))),
    }
}

/// Issue 33, finding 2, on PostgreSQL: the content of an expired call is sealed
/// with its period's key, and that key is destroyed once the period is over, so
/// the manifest's bytes as they were before the sweep (what a dead tuple or a page
/// keeps) no longer open; a call that stays reads the same.
#[tokio::test]
async fn swept_content_is_shredded_with_its_period_key_on_postgres() {
    use llmtap::record::CallStatus;
    use llmtap::store::{Engine, StoreOptions};
    const DAY: u64 = 86_400_000_000;
    let db = pg::fresh_db("shred").await;
    let (pool, _) = engine::prepare(&engine_config(&db.url())).await.unwrap();
    let client = db.connect().await;
    let now = llmtap::timefmt::now_unix_us();
    let old = now - 6 * DAY;
    engine::ensure_partitions(&client, old - DAY, now)
        .await
        .unwrap();
    let shared = distinct_text("kept system prompt", 9_000);
    let expired = round_with_bodies("old-run", 1, old, &shared, CallStatus::Success);
    let kept = round_with_bodies("new-run", 1, now - 1000, &shared, CallStatus::Success);
    let (expired_id, kept_id) = (expired.id.clone(), kept.id.clone());
    let options = StoreOptions {
        retention_days: 4,
        key_period_secs: 1,
        ..StoreOptions::default()
    };
    let store = pg_engine(&pool, "a", &options);
    let id = expired_id.clone();
    let store = tokio::task::spawn_blocking(move || {
        store.write_batch(&[expired, kept], &[]).unwrap();
        assert!(store.get_call(&id).unwrap().unwrap().request_body.is_some());
        store
    })
    .await
    .unwrap();
    let before: Vec<u8> = client
        .query_one(
            "SELECT manifest FROM call_content WHERE call_id = $1",
            &[&expired_id],
        )
        .await
        .unwrap()
        .get(0);
    let sealed_in: i64 = client
        .query_one("SELECT llmtap_sealed_in($1)", &[&before])
        .await
        .unwrap()
        .get(0);
    // It opens with the keys the database holds now.
    codec_with_vault_of(&client)
        .await
        .open(expired_id.as_bytes(), &before)
        .unwrap();
    // The period ends, and a grace of one period after it.
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    let kept_for_check = kept_id.clone();
    let report = tokio::task::spawn_blocking(move || {
        let report = store.sweep(now).unwrap();
        let call = store.get_call(&kept_for_check).unwrap().unwrap();
        assert!(call.request_body.unwrap().contains(&shared[..64]));
        report
    })
    .await
    .unwrap();
    assert_eq!(report.calls_deleted, 1, "{report:?}");
    assert!(report.keys_shredded >= 1, "{report:?}");
    assert!(report.values_resealed >= 1, "{report:?}");
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM content_keys WHERE slot = $1",
            &[&sealed_in],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let due: i64 = client
        .query_one("SELECT count(*) FROM content_shred_due", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(due, 0);
    // What the disk may still keep of the expired manifest no longer opens.
    let err = codec_with_vault_of(&client)
        .await
        .open(expired_id.as_bytes(), &before)
        .expect_err("an expired manifest opened after its period key was destroyed");
    assert!(
        matches!(err, llmtap::store::StoreError::Shredded { .. }),
        "{err}"
    );
    // Every value left is sealed in a period whose key exists.
    let orphans: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM chunks c WHERE NOT EXISTS \
               (SELECT 1 FROM content_keys k WHERE k.slot = c.sealed_in)) + \
             (SELECT count(*) FROM call_content c WHERE NOT EXISTS \
               (SELECT 1 FROM content_keys k WHERE k.slot = c.sealed_in))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0);
}

/// The chunks' stored reference counts, and the counts recounted from what names
/// them (each manifest's roots, each template's chunks), both sorted by address.
async fn recount_refs(
    client: &tokio_postgres::Client,
) -> (Vec<(Vec<u8>, i64)>, Vec<(Vec<u8>, i64)>) {
    use llmtap::store::content::{decode_template, Seg};
    use llmtap::store::manifest::Manifest;
    let codec = codec_with_vault_of(client).await;
    let mut counted: std::collections::BTreeMap<Vec<u8>, i64> = Default::default();
    for row in client
        .query("SELECT call_id, manifest FROM call_content", &[])
        .await
        .unwrap()
    {
        let id: String = row.get(0);
        let plain = codec.open(id.as_bytes(), row.get::<_, &[u8]>(1)).unwrap();
        for root in Manifest::decode(&plain).unwrap().roots() {
            *counted.entry(root.to_vec()).or_default() += 1;
        }
    }
    let stored = chunk_refs(client).await;
    for row in client
        .query("SELECT addr, value FROM chunks", &[])
        .await
        .unwrap()
    {
        let addr: Vec<u8> = row.get(0);
        counted.entry(addr.clone()).or_default();
        for seg in decode_template(&codec.open(&addr, row.get::<_, &[u8]>(1)).unwrap()).unwrap() {
            if let Seg::Chunk(c) = seg {
                *counted.entry(c.to_vec()).or_default() += 1;
            }
        }
    }
    (stored, counted.into_iter().collect())
}

/// The partitions of `calls` (names), sorted.
async fn call_partitions(client: &tokio_postgres::Client) -> Vec<String> {
    let mut names: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'calls'::regclass",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn retention_sweeps_whole_days_and_frees_exactly_the_content_no_call_keeps() {
    use llmtap::record::CallStatus;
    use llmtap::store::{Engine, StoreOptions};
    const DAY: u64 = 86_400_000_000;
    let db = pg::fresh_db("sweep").await;
    let (pool, _) = engine::prepare(&engine_config(&db.url())).await.unwrap();
    let client = db.connect().await;
    let now = llmtap::timefmt::now_unix_us();
    let old = now - 5 * DAY;
    let older = now - 6 * DAY;
    // Day partitions for the old days too, so that dropping them is what happens.
    engine::ensure_partitions(&client, older - DAY, now)
        .await
        .unwrap();
    let shared = distinct_text("kept system prompt", 9_000);
    let only_old = distinct_text("expired system prompt", 9_000);
    let oldest_run = [
        round_with_bodies("old-run", 1, older, &only_old, CallStatus::Success),
        round_with_bodies("old-run", 2, older + 1000, &only_old, CallStatus::Success),
    ];
    // An expired call that shares its prompt with a call that stays.
    let old_shared = round_with_bodies("old-shared", 1, old, &shared, CallStatus::Failed);
    let recent: Vec<_> = (0..3)
        .map(|i| {
            round_with_bodies(
                "new-run",
                i + 1,
                now - 3_600_000_000 + u64::from(i),
                &shared,
                CallStatus::Success,
            )
        })
        .collect();
    // A call old enough for body retention, not for retention.
    let aged = round_with_bodies("aged-run", 1, now - 2 * DAY, &shared, CallStatus::Success);
    let options = StoreOptions {
        retention_days: 4,
        body_retention_days: 1,
        ..StoreOptions::default()
    };
    let store = pg_engine(&pool, "a", &options);
    let mut all: Vec<_> = oldest_run.to_vec();
    all.push(old_shared.clone());
    all.push(aged.clone());
    all.extend(recent.iter().cloned());
    let (aged_id, recent_ids) = (
        aged.id.clone(),
        recent.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
    );
    let gone: Vec<String> = oldest_run
        .iter()
        .chain([&old_shared])
        .map(|c| c.id.clone())
        .collect();
    let report = tokio::task::spawn_blocking(move || {
        store.write_batch(&all, &[]).unwrap();
        assert_eq!(
            store
                .rollup_total(&llmtap::store::RollupScope::All)
                .unwrap()
                .calls,
            7
        );
        let report = store.sweep(now).unwrap();
        for id in &gone {
            assert!(store.get_call(id).unwrap().is_none(), "{id} expired");
        }
        assert!(store.get_invocation("old-run").unwrap().is_none());
        assert!(store.get_invocation("old-shared").unwrap().is_none());
        // The survivors read back whole, the shared prompt included.
        for id in &recent_ids {
            let call = store.get_call(id).unwrap().unwrap();
            assert!(call.request_body.unwrap().contains(&shared[..64]));
        }
        // Body retention: the aged call keeps its metadata, loses its content.
        let aged_call = store.get_call(&aged_id).unwrap().expect("metadata kept");
        assert!(aged_call.request_body.is_none());
        assert!(store.get_raw(&aged_id, false).unwrap().is_none());
        assert!(aged_call
            .parse_notes
            .iter()
            .any(|n| n == "bodies removed by store.body_retention_days"));
        // The rollups no longer count what is gone.
        let total = store
            .rollup_total(&llmtap::store::RollupScope::All)
            .unwrap();
        assert_eq!((total.calls, total.invocations), (4, 2), "{total:?}");
        // A second pass finds nothing more to do.
        assert_eq!(store.sweep(now).unwrap(), Default::default());
        report
    })
    .await
    .unwrap();
    assert_eq!(report.calls_deleted, 3, "{report:?}");
    assert_eq!(report.invocations_deleted, 2, "{report:?}");
    assert_eq!(report.bodies_dropped, 1, "{report:?}");
    assert!(report.chunks_freed > 0, "{report:?}");
    // Every piece left is referenced, and its count is the references that remain
    // (manifests' roots and templates' children), recounted from scratch: nothing
    // leaked, and nothing a survivor names was freed (it would be counted, not stored).
    let (stored, recounted) = recount_refs(&client).await;
    assert_eq!(stored, recounted);
    assert!(stored.iter().all(|(_, n)| *n > 0));
    // The expired days' partitions are gone, not emptied.
    let parts = call_partitions(&client).await;
    let day_name = |t: u64| {
        let date = llmtap::timefmt::format_rfc3339_us(t);
        format!("calls_p{}", date[..10].replace('-', ""))
    };
    assert!(!parts.contains(&day_name(older)), "{parts:?}");
    assert!(!parts.contains(&day_name(old)), "{parts:?}");
    assert!(parts.contains(&day_name(now)), "{parts:?}");
    // The dropped days' facet counts went with them; the calls left are counted.
    let counted: Vec<(i64, i64)> = client
        .query(
            "SELECT day_us, n FROM call_facet_days WHERE facet = 't=' ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let day_of = |t: u64| (t - t % DAY) as i64;
    let mut want = vec![(day_of(now - 2 * DAY), 1), (day_of(now - 3_600_000_000), 3)];
    want.dedup_by(|b, a| {
        let same = a.0 == b.0;
        if same {
            a.1 += b.1;
        }
        same
    });
    assert_eq!(counted, want);
}

/// A TCP hop to the test database that can be cut (its connections closed, new ones
/// closed as soon as they arrive) and restored: a network outage between llmtap and
/// PostgreSQL, with the real server on the other side.
struct CuttableHop {
    port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl CuttableHop {
    /// Serves on a runtime of its own: the engine's calls block the test's thread
    /// while PostgreSQL answers through this hop.
    fn start(target_port: u16) -> CuttableHop {
        use std::sync::atomic::Ordering;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let port = std_listener.local_addr().unwrap().port();
        let hop = CuttableHop {
            port,
            down: Default::default(),
            connections: Default::default(),
        };
        let (down, connections) = (hop.down.clone(), hop.connections.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees its connection closed
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(task);
                }
            });
        });
        hop
    }

    fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_database_outage_loses_no_answered_call_and_readyz_says_so() {
    use super::util::*;
    let db = pg::fresh_db("outage").await;
    let hop = CuttableHop::start(db.port);
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"choices":[]}"#)).await;
    let dir = TempDir::new("pg-outage");
    let mut config = test_config(dir.path(), &provider_toml("mock", "openai", &mock.url()));
    let through_hop = format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
        hop.port, db.name
    );
    config.engine = StoreEngine::Postgres(engine_config(&through_hop));
    let running = start_llmtap(config).await;
    let send_call = || async {
        let got = post_json(
            running.proxy_addr,
            "/mock/v1/chat/completions",
            &[("x-llmtap-invocation-id", "outage-run")],
            "{}",
        )
        .await;
        assert_eq!(got.status, 200, "forwarding goes on");
        got.call_id()
    };
    let mut sent = Vec::new();
    for _ in 0..3 {
        sent.push(send_call().await);
    }
    for id in &sent {
        wait_call(&running, id).await;
    }
    assert_eq!(
        send(running.api_addr, "GET", "/readyz", &[], "")
            .await
            .status,
        200
    );

    hop.cut();
    for _ in 0..10 {
        sent.push(send_call().await);
    }
    // Readiness and the metrics say the store takes no writes.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = send(running.api_addr, "GET", "/readyz", &[], "").await;
        if ready.status == 503 && ready.json()["error"]["type"] == "store_writes_failing" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "readyz never said so");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(running.api_addr, "llmtap_store_writes_failing").await,
        Some(1)
    );

    // The database comes back: every answered call is written, once.
    hop.restore();
    let client = db.connect().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stored: i64 = client
            .query_one("SELECT count(*) FROM calls WHERE id = ANY($1)", &[&sent])
            .await
            .unwrap()
            .get(0);
        if stored == sent.len() as i64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stored} of {} calls stored after the outage",
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while send(running.api_addr, "GET", "/readyz", &[], "")
        .await
        .status
        != 200
    {
        assert!(std::time::Instant::now() < deadline, "never ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = running.store.get_invocation("outage-run").unwrap().unwrap();
    assert_eq!(run.rounds, 13, "each call counted once");
    assert_eq!(
        metric(running.api_addr, "llmtap_capture_failures_total").await,
        Some(0)
    );
    running.shutdown().await.unwrap();
}

/// A database written before rollup cells counted tool calls: migration 0010 fills
/// the counts from the stored calls, as the writer would have counted them.
#[tokio::test]
async fn migration_0010_counts_the_tool_calls_already_stored() {
    use llmtap::store::{BucketRange, RollupScope, Store, StoreOptions};
    let db = pg::fresh_db("tool_rollups").await;
    let config = engine_config(&db.url());
    let (pool, _) = engine::prepare(&config).await.unwrap();
    let dir = super::util::TempDir::new("pg-tool-rollups");
    let store = pg_store(&pool, dir.path(), "a", StoreOptions::default());
    let cells = |store: Store| {
        tokio::task::spawn_blocking(move || {
            let scopes = [
                RollupScope::All,
                RollupScope::Tenant("acme".into()),
                RollupScope::Agent {
                    tenant: None,
                    agent: "planner".into(),
                },
                RollupScope::Agent {
                    tenant: Some("acme".into()),
                    agent: "planner".into(),
                },
            ];
            let out: Vec<(u64, u64, u64)> = scopes
                .iter()
                .map(|s| {
                    let c = store.rollup_total(s).unwrap();
                    (c.calls, c.tool_calls, c.tool_failures)
                })
                .collect();
            let range = store
                .rollup_range(&RollupScope::All, BucketRange::starting_in(0, u64::MAX / 2))
                .unwrap();
            (out, (range.tool_calls, range.tool_failures))
        })
    };
    let writer = store.clone();
    tokio::task::spawn_blocking(move || {
        super::conformance::write(&writer, super::conformance::tool_call_run());
    })
    .await
    .unwrap();
    let written = cells(store.clone()).await.unwrap();
    assert_eq!(written.0, vec![(1, 2, 1); 4]);
    assert_eq!(written.1, (2, 1));
    // As before 0010: no tool counters. Then the migration itself, on real rows.
    let client = pool.get().await.unwrap();
    client
        .batch_execute("ALTER TABLE rollups DROP COLUMN tool_calls, DROP COLUMN tool_failures")
        .await
        .unwrap();
    client
        .batch_execute(include_str!(
            "../../src/store/postgres/migrations/0010_rollup_tool_counts.sql"
        ))
        .await
        .unwrap();
    drop(client);
    assert_eq!(cells(store).await.unwrap(), written);
}

/// On PostgreSQL a nearly full data directory pauses no bodies (they go to the
/// server), and `/healthz` says bodies are stored while it reports the disk.
#[tokio::test]
async fn a_nearly_full_local_disk_keeps_bodies_on_postgres_and_healthz_says_so() {
    use super::util::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let db = pg::fresh_db("disk_bodies").await;
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"content":[]}"#)).await;
    let dir = TempDir::new("pg-disk-bodies");
    let mut config = test_config(
        dir.path(),
        &format!(
            "{}[store]\nmin_free_mb = 1000\ncritical_free_mb = 100\n",
            provider_toml("up", "anthropic", &mock.url())
        ),
    );
    config.engine = StoreEngine::Postgres(engine_config(&db.url()));
    let running = start_llmtap(config).await;
    let free = Arc::new(AtomicU64::new(500 << 20));
    let f = free.clone();
    let disk = running.store.disk();
    disk.set_probe(Arc::new(move |_| Ok(f.load(Ordering::Relaxed))));
    disk.check();
    let body = r#"{"model":"claude","messages":[{"role":"user","content":"hello there"}]}"#;
    let got = post_json(running.proxy_addr, "/up/v1/messages", &[], body).await;
    assert_eq!(got.status, 200);
    let call = wait_call(&running, &got.call_id()).await;
    assert_eq!(call.request_body.as_deref(), Some(body));
    assert!(
        !call.parse_notes.iter().any(|n| n.contains("disk")),
        "{:?}",
        call.parse_notes
    );
    let health = api_get(&running, "/healthz").await.json();
    assert_eq!(health["storage"]["disk"], "bodies_paused", "{health}");
    assert_eq!(health["storage"]["storing_bodies"], true, "{health}");
    assert_eq!(health["storage"]["storing_calls"], true, "{health}");
    // Past the critical level nothing is stored, on PostgreSQL too.
    free.store(50 << 20, Ordering::Relaxed);
    disk.check();
    let health = api_get(&running, "/healthz").await.json();
    assert_eq!(health["storage"]["storing_bodies"], false, "{health}");
    running.shutdown().await.unwrap();
}
