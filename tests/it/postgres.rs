//! The PostgreSQL engine against a real server (`pg.rs`): migrations, partitions, the
//! pool's bound, TLS by rustls, and what `llmtap serve` does with `[store] url`.

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
    assert_eq!(applied, vec![1], "exactly one instance applied version 1");
    let client = db.connect().await;
    assert_eq!(versions(&client).await, vec![1]);
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
            assert_eq!((found, known), (99, 1));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    // `llmtap serve` refuses to start on it, saying why.
    let err = start_with_url(&db.url()).await;
    assert!(err.contains("newer than this llmtap knows"), "{err}");
    assert_eq!(versions(&client).await, vec![1, 99]);
}

/// `server::start` with `[store] url`; returns its error text.
async fn start_with_url(url: &str) -> String {
    let dir = super::util::TempDir::new("pg-serve");
    let mut config = super::util::test_config(dir.path(), "");
    config.engine = StoreEngine::Postgres(PostgresConfig {
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
    });
    match llmtap::server::start(config).await {
        Ok(running) => {
            let _ = running.shutdown().await;
            panic!("llmtap started on PostgreSQL although the engine is not there yet")
        }
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn serve_with_a_url_prepares_the_schema_then_refuses_to_record_elsewhere() {
    let db = pg::fresh_db("serve_url").await;
    let err = start_with_url(&db.url()).await;
    assert!(err.contains("not available in this build yet"), "{err}");
    let client = db.connect().await;
    assert_eq!(versions(&client).await, vec![1]);
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
    }
}

#[tokio::test]
async fn rollups_from_instances_writing_at_once_add_up_exactly() {
    use engine::rollups::{self, RollupDelta};
    use llmtap::store::index::BUCKET_US;
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
    let first = rollups::range(&*client, b"*", t0, t0 + BUCKET_US)
        .await
        .unwrap();
    assert_eq!(first.calls, 8 * 14 * 2);
    let three = rollups::range(&*client, b"*", t0, t0 + 3 * BUCKET_US)
        .await
        .unwrap();
    assert_eq!(three.calls, 8 * 40 * 2);
    // A range starting inside a bucket leaves that bucket out, as sled does.
    let later = rollups::range(&*client, b"*", t0 + 1, t0 + 3 * BUCKET_US)
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
fn engine_config(url: &str) -> PostgresConfig {
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
async fn the_engine_behind_the_store_handle_answers_or_says_not_yet() {
    use llmtap::store::{EngineContext, Store, StoreError, StoreOptions};
    let db = pg::fresh_db("engine_handle").await;
    let config = engine_config(&db.url());
    let (pool, version) = engine::prepare(&config).await.unwrap();
    assert_eq!(version, 1);
    // Two instances on one database.
    let dir = super::util::TempDir::new("pg-engine");
    let open = |instance: &str| {
        let (pool, instance) = (pool.clone(), instance.to_string());
        let options = StoreOptions::default();
        Store::open_engine(
            EngineContext::new(dir.path(), &options),
            options,
            move |_| {
                Ok(std::sync::Arc::new(engine::PostgresStore::new(
                    pool.clone(),
                    instance.clone(),
                )?))
            },
        )
        .unwrap()
    };
    let (a, b) = (open("a"), open("b"));
    engine::rollups::add(
        &*pool.get().await.unwrap(),
        &[engine::rollups::RollupDelta {
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
        let total = b2.rollup_total(b"*").unwrap();
        assert_eq!((total.calls, total.cost_pusd), (3, 7));
        assert_eq!(a2.rollup_scopes(b"").unwrap().len(), 1);
        // Capture-log positions are per instance.
        assert_eq!(a2.journal_applied().unwrap(), None);
        a2.set_journal_applied(4096).unwrap();
        a2.set_journal_applied(100).unwrap(); // never goes back
        assert_eq!(a2.journal_applied().unwrap(), Some(4096));
        assert_eq!(b2.journal_applied().unwrap(), None);
        // Audit entries written by one instance are read by the other.
        for (i, at) in [10u64, 20].into_iter().enumerate() {
            a2.append_audit(&llmtap::store::sled::AuditEntry {
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
        // What is not there yet says so, typed, instead of panicking or answering empty.
        match a2.get_call("c_1") {
            Err(StoreError::NotOnPostgres { operation }) => assert_eq!(operation, "get_call"),
            other => panic!("expected NotOnPostgres, got {other:?}"),
        }
        let err = a2.write_batch(&[], &[]).unwrap_err().to_string();
        assert_eq!(
            err,
            "write_batch is not yet available on the PostgreSQL store"
        );
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

#[tokio::test]
async fn call_rows_from_two_instances_are_stored_once_and_read_in_start_order() {
    use super::synthetic::synthetic_call;
    use llmtap::record::CallStatus;
    use llmtap::store::summary::CallSummary;
    use llmtap::store::Engine;
    let db = pg::fresh_db("call_rows").await;
    let (pool, _) = engine::prepare(&engine_config(&db.url())).await.unwrap();
    let t0 = 1_780_000_000_000_000u64;
    // One run whose rounds went through two instances: each numbered its own rounds.
    let call = |round: u32, offset_us: u64| {
        synthetic_call(
            "run-1",
            round,
            t0 + offset_us,
            "planner",
            "acme",
            Some("s-1"),
            round as usize,
            CallStatus::Success,
            100 * u64::from(round),
            7,
        )
    };
    let (first, third) = (call(1, 0), call(2, 20_000));
    let second = call(1, 10_000);
    let (other_first, other_second) = (first.clone(), second.clone());
    let summary_of_second = serde_json::to_value(CallSummary::from_record(&second)).unwrap();
    let (ids, meta) = tokio::task::spawn_blocking({
        let pool = pool.clone();
        move || {
            let a = engine::PostgresStore::new(pool.clone(), "a".into()).unwrap();
            let b = engine::PostgresStore::new(pool, "b".into()).unwrap();
            assert_eq!(
                a.write_call_rows(&[first.clone(), third.clone()]).unwrap(),
                2
            );
            // b replays a's first call (as a rewound capture log would) with its own.
            assert_eq!(b.write_call_rows(&[other_first, other_second]).unwrap(), 1);
            assert_eq!(a.write_call_rows(std::slice::from_ref(&third)).unwrap(), 0);
            assert_eq!((a.call_count(), b.call_count()), (3, 3));
            assert!(b.contains_call(&third.id).unwrap());
            let expected = vec![first.id.clone(), second.id.clone(), third.id.clone()];
            for store in [&a, &b] {
                assert_eq!(store.invocation_call_ids("run-1").unwrap(), expected);
                assert_eq!(store.call_ids().unwrap(), expected);
            }
            assert!(a.invocation_call_ids("run-2").unwrap().is_empty());
            assert_eq!(
                b.record_tenant(false, &second.id).unwrap(),
                Some(Some("acme".to_string()))
            );
            assert_eq!(b.record_tenant(false, "c_nope").unwrap(), None);
            assert!(a.get_call_meta("c_nope").unwrap().is_none());
            let meta = a.get_call_meta(&second.id).unwrap().unwrap();
            (expected, (meta, second))
        }
    })
    .await
    .unwrap();
    let (meta, second) = meta;
    // The metadata is what sled keeps of a call: the one shared stored form.
    assert_eq!(
        serde_json::to_value(&meta).unwrap(),
        serde_json::to_value(llmtap::store::stored::metadata_only(&second)).unwrap()
    );
    assert!(meta.request_body.is_none() && meta.response_body.is_none());
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
        1,
        "the round as the writing instance numbered it"
    );
    assert_eq!(row.get::<_, Option<String>>(2).as_deref(), Some("acme"));
    assert_eq!(row.get::<_, Option<String>>(3).as_deref(), Some("s-1"));
    assert_eq!(row.get::<_, Option<i64>>(4), Some(100));
}
