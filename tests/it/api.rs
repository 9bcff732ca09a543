//! The read API: filters, paging and cursors, records by id, sessions, rollups, rate
//! limits, CSV, the live stream, tokens, roles, tenants and the audit log.
//! Records are synthetic (`src/devtools/synthetic.rs`) written through `write_batch`.

use super::synthetic::synthetic_call;
use super::util::*;
use llmtap::record::roll_up;
use llmtap::record::{CallRecord, CallStatus, InvocationRecord, Message};
use llmtap::server::Running;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const T0: u64 = 1_780_000_000_000_000; // 2026-05-28T20:26:40Z

fn call(
    inv: &str,
    round: u32,
    t: u64,
    agent: &str,
    tenant: &str,
    status: CallStatus,
) -> CallRecord {
    synthetic_call(inv, round, t, agent, tenant, None, 0, status, 100, 10)
}

fn write(running: &Running, calls: &[CallRecord]) {
    let mut invs: HashMap<String, InvocationRecord> = HashMap::new();
    for c in calls {
        let existing = invs
            .remove(&c.invocation_id)
            .or_else(|| running.store.get_invocation(&c.invocation_id).unwrap());
        invs.insert(c.invocation_id.clone(), roll_up(existing, c));
    }
    let invs: Vec<InvocationRecord> = invs.into_values().collect();
    running.store.write_batch(calls, &invs).unwrap();
}

/// llmtap on the test's engine (`util::on_test_engine`): sled in a temporary
/// directory, or a fresh database on the tests' PostgreSQL (`pg.rs`).
async fn start(extra: &str) -> (Running, TempDir) {
    let dir = TempDir::new("api");
    let mut config = test_config(dir.path(), extra);
    on_test_engine(&mut config, "api").await;
    let running = start_llmtap(config).await;
    (running, dir)
}

on_both_engines!(
    lists_filter_every_field_newest_first,
    cursor_walk_sees_every_record_once_while_new_records_arrive,
    bad_parameters_are_400_naming_the_parameter_and_unknown_ids_404,
    invocation_joins_tool_calls_to_results_and_explains_failures,
    sessions_list_and_timeline_include_tool_http_calls,
    summary_agents_stats_and_ratelimits_come_from_rollups,
    tokens_roles_tenants_and_the_audit_log,
    session_subjects_are_admin_only_and_audited_and_ratelimits_need_an_unconfined_token,
    joined_filters_match_brute_force_in_pages_totals_and_cursor_walks,
    csv_exports_quote_prompts_with_commas_quotes_and_newlines,
    live_stream_sends_matching_summaries_as_they_are_stored,
    proxied_calls_appear_in_lists,
    model_filter_matches_requested_or_answered_and_groups_by_requested,
    session_costs_are_exact_picodollar_sums,
    audit_entries_record_the_query_string_as_sent,
    prompt_logs_read_prompts_newest_first_in_windows_pages_and_filters_for_admins_only,
    call_history_counts_memory_from_the_sessions_previous_run_and_the_runs_earlier_rounds,
);

async fn get(running: &Running, path: &str, token: Option<&str>) -> Got {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    send(running.api_addr, "GET", path, &headers, "").await
}

async fn ok_json(running: &Running, path: &str) -> Value {
    let got = get(running, path, None).await;
    assert_eq!(
        got.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&got.body)
    );
    got.json()
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// 40 one-call invocations with varied metadata, one second apart.
fn varied() -> Vec<CallRecord> {
    (0..40u64)
        .map(|i| {
            let status = [
                CallStatus::Success,
                CallStatus::Failed,
                CallStatus::RateLimited,
                CallStatus::Success,
            ][i as usize % 4];
            let mut c = synthetic_call(
                &format!("inv-{i:02}"),
                1,
                T0 + i * 1_000_000,
                &format!("agent-{}", i % 3),
                &format!("tenant-{}", i % 2),
                (i % 5 == 0).then_some("sess-1"),
                i as usize % 2,
                status,
                100 + i,
                10,
            );
            c.metadata.trigger = Some(if i < 10 { "user" } else { "task" }.into());
            c.metadata.user_id = Some(format!("u{}", i % 4));
            c.metadata.prompt = Some(format!("p@v{}", i % 2));
            if i == 7 {
                c.metadata.properties.insert("env".into(), "prod".into());
                c.request.as_mut().unwrap().system = Some("You know the SECRET-WORD".into());
            }
            c
        })
        .collect()
}

async fn lists_filter_every_field_newest_first() {
    let (running, _dir) = start("").await;
    let calls = varied();
    write(&running, &calls);
    let all = ok_json(&running, "/api/v1/calls?limit=200").await;
    assert_eq!(all["total"], 40);
    assert_eq!(all["total_is_lower_bound"], false);
    let listed = ids(&all);
    let mut expected: Vec<String> = calls.iter().rev().map(|c| c.id.clone()).collect();
    assert_eq!(listed, expected, "newest first");
    assert_eq!(all["items"][0]["input_tokens"], 139);
    assert!(all["items"][0].get("request").is_none(), "summaries only");

    let count = |v: &Value| v["items"].as_array().unwrap().len();
    let cases: Vec<(&str, usize)> = vec![
        ("agent=agent-1", 13),
        ("agent=agent-1&agent=agent-2", 26),
        ("provider=openai", 40),
        ("model=gpt-4o", 20),
        ("status=failed", 10),
        ("status=failed&status=rate_limited", 20),
        ("status=failed,rate_limited&agent=agent-0", 6),
        ("trigger=user", 10),
        ("tenant=tenant-1", 20),
        ("user_id=u3", 10),
        ("session_id=sess-1", 8),
        ("prompt=p@v1", 20),
        ("property.env=prod", 1),
        ("has_session=true", 8),
        ("has_session=false", 32),
        ("from=2026-05-28T20:27:00Z", 20),
        ("from=2026-05-28T20:27:00Z&to=2026-05-28T20:27:10Z", 10),
        ("to=2026-05-28T20:26:45Z", 5),
        ("from=2026-05-29", 0),
        ("min_cost=0.0000165", 20),
        ("q=secret-word", 1),
        ("q=nothing-like-this", 0),
    ];
    for (query, n) in cases {
        let v = ok_json(&running, &format!("/api/v1/calls?limit=200&{query}")).await;
        assert_eq!(count(&v), n, "calls?{query}");
        assert_eq!(v["total"], n as u64, "total for {query}");
        let inv = ok_json(&running, &format!("/api/v1/invocations?limit=200&{query}")).await;
        assert_eq!(count(&inv), n, "invocations?{query}");
    }
    // limit and offset
    let page = ok_json(&running, "/api/v1/calls?limit=15&offset=30").await;
    assert_eq!(count(&page), 10);
    assert_eq!(page["has_more"], false);
    let page = ok_json(&running, "/api/v1/calls?limit=15&offset=15").await;
    assert_eq!(page["next_offset"], 30);
    expected.truncate(30);
    assert_eq!(ids(&page), expected[15..30]);
    running.shutdown().await.unwrap();
}

async fn cursor_walk_sees_every_record_once_while_new_records_arrive() {
    let (running, _dir) = start("").await;
    let first: Vec<CallRecord> = (0..250u64)
        .map(|i| {
            call(
                &format!("w-{i}"),
                1,
                T0 + i * 1000,
                "walker",
                "t",
                CallStatus::Success,
            )
        })
        .collect();
    write(&running, &first);
    // One indexed filter walks the join; three take their pages from the facet cache.
    let walks = [
        ("/api/v1/calls", "agent=walker"),
        ("/api/v1/invocations", "agent=walker"),
        ("/api/v1/calls", "agent=walker&tenant=t&status=success"),
        (
            "/api/v1/invocations",
            "agent=walker&tenant=t&status=success",
        ),
    ];
    for (walk, (path, filters)) in walks.into_iter().enumerate() {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut extra = 0u64;
        loop {
            let url = match &cursor {
                Some(c) => format!("{path}?{filters}&limit=7&cursor={c}"),
                None => format!("{path}?{filters}&limit=7"),
            };
            let page = ok_json(&running, &url).await;
            seen.extend(ids(&page));
            // New records keep arriving, newer than everything walked so far.
            extra += 1;
            write(
                &running,
                &[call(
                    &format!("new-{walk}-{extra}"),
                    1,
                    T0 + 10_000_000 * (walk as u64 + 1) + extra,
                    "walker",
                    "t",
                    CallStatus::Success,
                )],
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{path}?{filters}: a record was seen twice"
        );
        let want: HashSet<String> = if path.ends_with("calls") {
            first.iter().map(|c| c.id.clone()).collect()
        } else {
            first.iter().map(|c| c.invocation_id.clone()).collect()
        };
        let walked: HashSet<String> = unique
            .into_iter()
            .filter(|id| want.contains(*id))
            .cloned()
            .collect();
        assert_eq!(walked, want, "{path}?{filters}: every record exactly once");
        // Records that arrived during this walk are newer than its cursor: never seen.
        assert!(!seen
            .iter()
            .any(|id| id.starts_with(&format!("new-{walk}-"))));
    }
    running.shutdown().await.unwrap();
}

async fn bad_parameters_are_400_naming_the_parameter_and_unknown_ids_404() {
    let (running, _dir) = start("").await;
    for (path, param) in [
        ("/api/v1/calls?colour=red", "colour"),
        ("/api/v1/calls?from=last-week", "from"),
        ("/api/v1/invocations?limit=500", "limit"),
        ("/api/v1/invocations?cursor=garbage", "cursor"),
        ("/api/v1/calls?status=weird", "status"),
        ("/api/v1/calls?offset=20000", "offset"),
        ("/api/v1/stats?group_by=colour", "group_by"),
        ("/api/v1/summary?tz=Mars", "tz"),
        // A CSV page is 1 to 200 rows, paged by cursor only.
        ("/api/v1/calls.csv?limit=500", "limit"),
        ("/api/v1/calls.csv?offset=3", "offset"),
        ("/api/v1/invocations.csv?cursor=garbage", "cursor"),
    ] {
        let got = get(&running, path, None).await;
        assert_eq!(got.status, 400, "{path}");
        assert_eq!(got.json()["error"]["parameter"], param, "{path}");
        assert!(got.json()["error"]["message"].as_str().unwrap().len() > 10);
    }
    for path in [
        "/api/v1/calls/c_nope",
        "/api/v1/invocations/nope",
        "/api/v1/sessions/nope",
        "/api/v1/nothing",
    ] {
        assert_eq!(get(&running, path, None).await.status, 404, "{path}");
    }
    running.shutdown().await.unwrap();
}

async fn invocation_joins_tool_calls_to_results_and_explains_failures() {
    let (running, _dir) = start("").await;
    let r1 = call("run-tools", 1, T0, "a", "t", CallStatus::Success);
    let r1_end = r1.started_at_us + (r1.latency_ms * 1000.0) as u64;
    let r2 = call(
        "run-tools",
        2,
        r1_end + 1_500_000,
        "a",
        "t",
        CallStatus::Success,
    );
    let mut r3 = call(
        "run-tools",
        3,
        r1_end + 9_000_000,
        "a",
        "t",
        CallStatus::RateLimited,
    );
    r3.rate_limit.as_mut().unwrap().retry_after_s = Some(12.0);
    let mut r4 = call(
        "run-tools",
        4,
        r1_end + 20_000_000,
        "a",
        "t",
        CallStatus::Unauthorized,
    );
    r4.api_key_fingerprint = Some("sha256:abcd1234…wxyz".into());
    write(&running, &[r1.clone(), r2.clone(), r3.clone(), r4.clone()]);
    let v = ok_json(&running, "/api/v1/invocations/run-tools").await;
    let rounds = v["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 4);
    assert_eq!(v["round_count"], 4);
    let tool = &rounds[0]["tool_calls"][0];
    assert_eq!(tool["name"], "lookup_ticket");
    assert_eq!(tool["result_round"], 2);
    assert_eq!(tool["result_call_id"], r2.id);
    assert_eq!(tool["duration_ms"], 1500.0);
    assert_eq!(tool["result"], "{\"ok\":true}");
    assert_eq!(rounds[0]["hint"], Value::Null);
    let hint = rounds[2]["hint"].as_str().unwrap();
    assert!(
        hint.contains("429")
            && hint.contains("tokens (0 of 2000000 left")
            && hint.contains("retry after 12s"),
        "{hint}"
    );
    let hint = rounds[3]["hint"].as_str().unwrap();
    assert!(
        hint.contains("refused API key sha256:abcd1234…wxyz"),
        "{hint}"
    );
    let c = ok_json(&running, &format!("/api/v1/calls/{}", r3.id)).await;
    assert!(c["hint"].as_str().unwrap().contains("rate limit"));
    assert!(c["request"]["messages"].is_array(), "admin sees messages");
    running.shutdown().await.unwrap();
}

async fn sessions_list_and_timeline_include_tool_http_calls() {
    let (running, _dir) = start("").await;
    let mut a = synthetic_call(
        "s-run",
        1,
        T0,
        "bot",
        "t",
        Some("chat-9"),
        0,
        CallStatus::Success,
        100,
        10,
    );
    a.request.as_mut().unwrap().messages = vec![Message {
        role: "user".into(),
        text: Some("Where is my parcel? It was due yesterday and I need it for a long trip".into()),
        ..Message::default()
    }];
    let mut tool = call("s-run", 2, T0 + 2_000_000, "bot", "t", CallStatus::Success);
    tool.kind = "http".into();
    tool.provider = "tracking".into();
    tool.metadata.session_id = None;
    let b = synthetic_call(
        "s-run-2",
        1,
        T0 + 5_000_000,
        "bot",
        "t",
        Some("chat-9"),
        0,
        CallStatus::Success,
        50,
        5,
    );
    let other = synthetic_call(
        "x",
        1,
        T0 + 9_000_000,
        "bot",
        "t",
        Some("chat-10"),
        0,
        CallStatus::Success,
        1,
        1,
    );
    write(&running, &[a.clone(), tool.clone(), b.clone(), other]);
    let list = ok_json(&running, "/api/v1/sessions").await;
    assert_eq!(ids(&list), vec!["chat-10", "chat-9"]);
    let s = &list["items"][1];
    assert_eq!(s["calls"], 2);
    assert_eq!(s["agent"], "bot");
    assert_eq!(s["input_tokens"], 150);
    assert!(s["subject"]
        .as_str()
        .unwrap()
        .starts_with("Where is my parcel?"));
    assert!(s["subject"].as_str().unwrap().chars().count() <= 80);
    let detail = ok_json(&running, "/api/v1/sessions/chat-9").await;
    let timeline: Vec<(String, String)> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["call_id"].as_str().unwrap().into(),
                e["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        timeline,
        vec![
            (a.id, "llm".into()),
            (tool.id, "http".into()),
            (b.id, "llm".into())
        ]
    );
    assert_eq!(detail["timeline"][0]["stop_reason"], "tool_calls");
    running.shutdown().await.unwrap();
}

async fn summary_agents_stats_and_ratelimits_come_from_rollups() {
    let (running, _dir) = start("").await;
    let now = llmtap::timefmt::now_unix_us();
    let mut calls = Vec::new();
    for i in 0..10u64 {
        let status = if i < 2 {
            CallStatus::RateLimited
        } else {
            CallStatus::Success
        };
        calls.push(call(
            &format!("today-{i}"),
            1,
            now - 60_000_000 + i,
            if i % 2 == 0 { "even" } else { "odd" },
            "acme",
            status,
        ));
    }
    // Three days ago: counted in totals, not today.
    calls.push(call(
        "old",
        1,
        now - 3 * 86_400_000_000,
        "even",
        "other",
        CallStatus::Failed,
    ));
    write(&running, &calls);
    let s = ok_json(&running, "/api/v1/summary").await;
    assert_eq!(s["total_runs"], 11);
    assert_eq!(s["errors_24h"], 2);
    assert_eq!(s["tokens_today"]["input"], 800);
    assert!(s["cost_today_usd"].as_f64().unwrap() > 0.0);
    let local = ok_json(&running, "/api/v1/summary?tenant=acme&tz=%2B02:00").await;
    assert_eq!(local["total_runs"], 10);
    assert_eq!(local["tz_offset_s"], 7200);
    let agents = ok_json(&running, "/api/v1/agents").await;
    let even = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "even")
        .unwrap();
    assert_eq!(even["invocations"], 6);
    assert_eq!(even["calls"], 6);
    assert!((even["error_rate"].as_f64().unwrap() - 2.0 / 6.0).abs() < 1e-9);
    assert!(even["p95_latency_ms"].as_f64().unwrap() > 0.0);
    let stats = ok_json(&running, "/api/v1/stats?group_by=agent&tenant=acme").await;
    let items = stats["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["group"], "even");
    assert_eq!(items[0]["calls"], 5);
    assert!((items[0]["success_rate"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    assert_eq!(items[0]["avg_input_tokens"], 80.0);
    let by_day = ok_json(&running, "/api/v1/stats?group_by=day").await;
    assert_eq!(by_day["items"].as_array().unwrap().len(), 2);
    for g in ["model", "provider", "prompt", "trigger", "tenant", "hour"] {
        ok_json(&running, &format!("/api/v1/stats?group_by={g}")).await;
    }
    let rl = ok_json(&running, "/api/v1/ratelimits?series=1").await;
    let item = &rl["items"][0];
    assert_eq!(item["provider"], "openai");
    assert_eq!(item["rate_limited_1h"], 2);
    assert_eq!(item["rate_limited_24h"], 2);
    assert_eq!(item["last_retry_after_s"], 20.0);
    assert_eq!(item["requests"]["limit"], 10000);
    // Reported a minute ago with windows of 6 and 30 s: history, not headroom now.
    assert!(item["reported_headroom_pct"].is_number());
    assert_eq!(item["stale"], true);
    assert!(item["headroom_pct"].is_null());
    assert_eq!(item["series"].as_array().unwrap().len(), 10);
    running.shutdown().await.unwrap();
}

fn token_toml(name: &str, token: &str, role: &str, tenant: Option<&str>) -> String {
    let hash = llmtap::config::token_sha256_hex(token);
    let tenant = tenant
        .map(|t| format!("tenant = \"{t}\"\n"))
        .unwrap_or_default();
    format!("[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{hash}\"\nrole = \"{role}\"\n{tenant}")
}

async fn tokens_roles_tenants_and_the_audit_log() {
    let toml = [
        token_toml("root", "admin-token", "admin", None),
        token_toml("watcher", "viewer-token", "viewer", None),
        token_toml("acme-viewer", "acme-token", "viewer", Some("acme")),
    ]
    .concat();
    let (running, _dir) = start(&toml).await;
    let mine = call("acme-run", 1, T0, "bot", "acme", CallStatus::Success);
    let theirs = call(
        "globex-run",
        1,
        T0 + 1,
        "bot",
        "globex",
        CallStatus::Success,
    );
    write(&running, &[mine.clone(), theirs.clone()]);
    let (admin, viewer, acme) = (
        Some("admin-token"),
        Some("viewer-token"),
        Some("acme-token"),
    );

    assert_eq!(get(&running, "/api/v1/calls", None).await.status, 401);
    assert_eq!(
        get(&running, "/api/v1/calls", Some("wrong")).await.status,
        401
    );
    assert_eq!(get(&running, "/healthz", None).await.status, 200);

    // Viewer: metadata yes, bodies and prompts no.
    let v = get(&running, &format!("/api/v1/calls/{}", mine.id), viewer)
        .await
        .json();
    assert_eq!(v["metadata"]["agent"], "bot");
    assert_eq!(v["usage"]["input_tokens"], 100);
    for field in ["request", "response", "request_body", "response_body"] {
        assert!(v[field].is_null(), "viewer sees {field}");
    }
    let inv = get(&running, "/api/v1/invocations/acme-run", viewer)
        .await
        .json();
    assert!(inv["rounds"][0]["tool_calls"][0].get("arguments").is_none());
    assert!(inv["calls"][0]["request"].is_null());
    assert_eq!(
        get(&running, "/api/v1/calls?q=ticket", viewer).await.status,
        403
    );
    assert_eq!(get(&running, "/api/v1/audit", viewer).await.status, 403);

    // Admin: bodies, audited.
    let a = get(&running, &format!("/api/v1/calls/{}", mine.id), admin)
        .await
        .json();
    assert!(a["request"]["messages"].is_array());
    let audit = get(&running, "/api/v1/audit", admin).await.json();
    let entry = &audit["items"][0];
    assert_eq!(entry["who"], "root");
    assert_eq!(entry["path"], format!("/api/v1/calls/{}", mine.id));
    assert!(entry["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(audit["count"], 1, "viewer reads are not audited");
    // Metrics count every tenant's calls: admin only (issue 33, finding 8).
    assert_eq!(get(&running, "/metrics", viewer).await.status, 403);
    assert_eq!(get(&running, "/metrics", acme).await.status, 403);
    assert_eq!(get(&running, "/metrics", admin).await.status, 200);

    // Tenant confinement.
    let list = get(&running, "/api/v1/calls", acme).await.json();
    assert_eq!(ids(&list), vec![mine.id.clone()]);
    let invs = get(&running, "/api/v1/invocations", acme).await.json();
    assert_eq!(ids(&invs), vec!["acme-run".to_string()]);
    assert_eq!(
        get(&running, "/api/v1/calls?tenant=globex", acme)
            .await
            .status,
        403
    );
    assert_eq!(
        get(&running, &format!("/api/v1/calls/{}", theirs.id), acme)
            .await
            .status,
        403
    );
    assert_eq!(
        get(&running, "/api/v1/calls/c_unknown", acme).await.status,
        403,
        "no hint whether it exists"
    );
    assert_eq!(
        get(&running, "/api/v1/invocations/globex-run", acme)
            .await
            .status,
        403
    );
    assert_eq!(
        get(&running, "/api/v1/summary?tenant=globex", acme)
            .await
            .status,
        403
    );
    assert_eq!(
        get(&running, "/api/v1/summary", acme).await.json()["total_runs"],
        1
    );
    let csv =
        String::from_utf8(get(&running, "/api/v1/calls.csv", acme).await.body.to_vec()).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert_eq!(
        get(&running, "/api/v1/calls/c_unknown", admin).await.status,
        404
    );
    running.shutdown().await.unwrap();
}

async fn session_subjects_are_admin_only_and_audited_and_ratelimits_need_an_unconfined_token() {
    let toml = [
        token_toml("root", "admin-token", "admin", None),
        token_toml("watcher", "viewer-token", "viewer", None),
        token_toml("acme-admin", "acme-admin-token", "admin", Some("acme")),
        token_toml("acme-viewer", "acme-token", "viewer", Some("acme")),
    ]
    .concat();
    let (running, _dir) = start(&toml).await;
    let mine = synthetic_call(
        "acme-chat",
        1,
        T0,
        "bot",
        "acme",
        Some("chat-acme"),
        0,
        CallStatus::RateLimited,
        100,
        10,
    );
    write(&running, &[mine]);
    let (admin, viewer, acme_admin, acme) = (
        Some("admin-token"),
        Some("viewer-token"),
        Some("acme-admin-token"),
        Some("acme-token"),
    );
    let audited = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["who"].as_str().unwrap(),
                    e["path"].as_str().unwrap()
                )
            })
            .collect()
    };

    // Viewers see sessions without subjects (prompt text), and nothing is audited.
    for token in [viewer, acme] {
        let list = get(&running, "/api/v1/sessions", token).await.json();
        assert_eq!(ids(&list), vec!["chat-acme"]);
        assert!(list["items"][0]["subject"].is_null());
        let one = get(&running, "/api/v1/sessions/chat-acme", token)
            .await
            .json();
        assert!(one["subject"].is_null());
        assert_eq!(one["timeline"].as_array().unwrap().len(), 1);
    }
    let log = get(&running, "/api/v1/audit", admin).await.json();
    assert_eq!(log["count"], 0, "viewer reads are not audited");

    // Admins (confined or not) see subjects, and each read is audited like /calls/{id}.
    let list = get(&running, "/api/v1/sessions", acme_admin).await.json();
    assert!(list["items"][0]["subject"]
        .as_str()
        .unwrap()
        .starts_with("Please summarise"));
    let one = get(&running, "/api/v1/sessions/chat-acme", admin)
        .await
        .json();
    assert!(one["subject"].as_str().is_some());
    let log = get(&running, "/api/v1/audit", admin).await.json();
    assert_eq!(
        audited(&log),
        vec![
            "root /api/v1/sessions/chat-acme".to_string(),
            "acme-admin /api/v1/sessions".to_string(),
        ]
    );
    assert_eq!(log["items"][1]["tenant"], "acme");

    // Rate-limit state belongs to provider keys that tenants may share: confined
    // tokens get 403, not another tenant's remaining capacity.
    for token in [acme, acme_admin] {
        let got = get(&running, "/api/v1/ratelimits", token).await;
        assert_eq!(got.status, 403);
        assert!(got.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("per provider API key"));
    }
    for token in [viewer, admin] {
        let rl = get(&running, "/api/v1/ratelimits", token).await.json();
        assert_eq!(rl["count"], 1);
        assert_eq!(rl["items"][0]["rate_limited_24h"], 0, "T0 is long ago");
    }
    running.shutdown().await.unwrap();
}

/// Records whose filters intersect sparsely, for join checks against brute force.
fn sparse() -> Vec<CallRecord> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    (0..1500u64)
        .map(|i| {
            let status = match next(20) {
                0 => CallStatus::Failed,
                1 => CallStatus::Timeout,
                _ => CallStatus::Success,
            };
            let session = (next(4) == 0).then(|| format!("s-{}", next(50)));
            let agent = format!("agent-{}", next(12));
            let tenant = format!("tenant-{}", next(5));
            let model = next(6) as usize;
            // Several calls share a microsecond now and then: ids break the tie.
            synthetic_call(
                &format!("j-{i}"),
                1,
                T0 + i / 2 * 1_000,
                &agent,
                &tenant,
                session.as_deref(),
                model,
                status,
                100,
                10,
            )
        })
        .collect()
}

async fn joined_filters_match_brute_force_in_pages_totals_and_cursor_walks() {
    let (running, _dir) = start("").await;
    let calls = sparse();
    for chunk in calls.chunks(500) {
        write(&running, chunk);
    }
    let from = T0 + 100_000;
    let to = T0 + 600_000;
    type Pred = Box<dyn Fn(&CallRecord) -> bool>;
    let status = |c: &CallRecord, s: CallStatus| c.status == Some(s);
    let cases: Vec<(String, Pred)> = vec![
        (
            "agent=agent-3&status=failed".into(),
            Box::new(move |c| {
                c.metadata.agent.as_deref() == Some("agent-3") && status(c, CallStatus::Failed)
            }),
        ),
        (
            "agent=agent-5&has_session=true".into(),
            Box::new(|c| {
                c.metadata.agent.as_deref() == Some("agent-5") && c.metadata.session_id.is_some()
            }),
        ),
        (
            "agent=agent-5&has_session=false&tenant=tenant-1".into(),
            Box::new(|c| {
                c.metadata.agent.as_deref() == Some("agent-5")
                    && c.metadata.session_id.is_none()
                    && c.metadata.tenant.as_deref() == Some("tenant-1")
            }),
        ),
        (
            "tenant=tenant-2&model=gpt-4o&status=failed,timeout".into(),
            Box::new(move |c| {
                c.metadata.tenant.as_deref() == Some("tenant-2")
                    && c.model.as_deref() == Some("gpt-4o")
                    && (status(c, CallStatus::Failed) || status(c, CallStatus::Timeout))
            }),
        ),
        (
            format!(
                "agent=agent-1,agent-2&status=success&from={}&to={}",
                llmtap::timefmt::format_rfc3339_us(from),
                llmtap::timefmt::format_rfc3339_us(to)
            ),
            Box::new(move |c| {
                matches!(c.metadata.agent.as_deref(), Some("agent-1" | "agent-2"))
                    && status(c, CallStatus::Success)
                    && (from..to).contains(&c.started_at_us)
            }),
        ),
        (
            "agent=agent-7&min_cost=0.00002".into(),
            Box::new(|c| {
                c.metadata.agent.as_deref() == Some("agent-7")
                    && c.cost_usd.is_some_and(|usd| usd >= 0.00002)
            }),
        ),
    ];
    let mut newest_first: Vec<&CallRecord> = calls.iter().collect();
    newest_first.sort_by(|a, b| (b.started_at_us, &b.id).cmp(&(a.started_at_us, &a.id)));
    for (query, pred) in &cases {
        let want: Vec<String> = newest_first
            .iter()
            .filter(|c| pred(c))
            .map(|c| c.id.clone())
            .collect();
        assert!(want.len() >= 3, "{query}: a sparse but non-empty case");
        let first = ok_json(&running, &format!("/api/v1/calls?{query}&limit=50")).await;
        assert_eq!(
            ids(&first),
            want[..want.len().min(50)],
            "{query}: first page"
        );
        assert_eq!(first["total"], want.len() as u64, "{query}: exact total");
        assert_eq!(first["total_is_lower_bound"], false, "{query}");
        let mut walked = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                Some(c) => format!("/api/v1/calls?{query}&limit=7&cursor={c}"),
                None => format!("/api/v1/calls?{query}&limit=7"),
            };
            let page = ok_json(&running, &url).await;
            // A cursor page still reports the total of the whole query.
            assert_eq!(page["total"], want.len() as u64, "{query}: total on {url}");
            walked.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(
            walked, want,
            "{query}: cursor walk sees each match once, in order"
        );
    }
    // Invocations: one per call here, so the same answers.
    let inv = ok_json(
        &running,
        "/api/v1/invocations?agent=agent-3&status=failed&limit=200",
    )
    .await;
    let want = newest_first
        .iter()
        .filter(|c| {
            c.metadata.agent.as_deref() == Some("agent-3") && c.status == Some(CallStatus::Failed)
        })
        .count();
    assert_eq!(inv["total"], want as u64);
    assert_eq!(inv["items"].as_array().unwrap().len(), want);

    // A second round changes some invocations' status and models: the pair counters
    // (timeless two-filter totals) must follow, and agree with the join's count.
    let second: Vec<CallRecord> = calls
        .iter()
        .step_by(3)
        .map(|c| {
            synthetic_call(
                &c.invocation_id,
                2,
                c.started_at_us + 1,
                c.metadata.agent.as_deref().unwrap(),
                c.metadata.tenant.as_deref().unwrap(),
                c.metadata.session_id.as_deref(),
                3,
                CallStatus::Failed,
                100,
                10,
            )
        })
        .collect();
    write(&running, &second);
    let invocations: Vec<InvocationRecord> = calls
        .iter()
        .map(|c| {
            running
                .store
                .get_invocation(&c.invocation_id)
                .unwrap()
                .unwrap()
        })
        .collect();
    for (agent, status, model) in [
        ("agent-3", Some("failed"), None),
        ("agent-3", Some("success"), None),
        ("agent-8", None, Some("claude-haiku-4")),
    ] {
        let want = invocations
            .iter()
            .filter(|i| i.agent.as_deref() == Some(agent))
            .filter(|i| status.is_none_or(|s| i.status.map(|x| x.as_str()) == Some(s)))
            .filter(|i| model.is_none_or(|m| i.models.iter().any(|x| x == m)))
            .count() as u64;
        assert!(want > 0, "{agent} {status:?} {model:?}");
        let mut filter = format!("agent={agent}");
        if let Some(s) = status {
            filter += &format!("&status={s}");
        }
        if let Some(m) = model {
            filter += &format!("&model={m}");
        }
        let counted = ok_json(&running, &format!("/api/v1/invocations?{filter}")).await;
        assert_eq!(counted["total"], want, "{filter}: pair counter");
        // A window covering everything: per-day counters plus the join at its edges.
        let joined = ok_json(
            &running,
            &format!("/api/v1/invocations?{filter}&from=2020-01-01"),
        )
        .await;
        assert_eq!(joined["total"], want, "{filter}: windowed count");
    }
    running.shutdown().await.unwrap();
}

/// A minimal RFC 4180 reader for the assertions.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    rows
}

async fn csv_exports_quote_prompts_with_commas_quotes_and_newlines() {
    let (running, _dir) = start("").await;
    let awkward = "Hello, \"world\"\nsecond line, too";
    let mut c = call("csv-run", 1, T0, "bot", "t", CallStatus::Success);
    c.metadata.prompt = Some("greet, \"v2\"\nbeta".into());
    c.request.as_mut().unwrap().messages[0].text = Some(awkward.into());
    let plain: Vec<CallRecord> = (1..=1200u64)
        .map(|i| {
            call(
                &format!("bulk-{i}"),
                1,
                T0 - i * 1000,
                "bulk",
                "t",
                CallStatus::Success,
            )
        })
        .collect();
    write(&running, &[c.clone()]);
    write(&running, &plain);
    let got = get(&running, "/api/v1/invocations.csv", None).await;
    assert_eq!(got.header("content-type"), Some("text/csv; charset=utf-8"));
    let rows = parse_csv(std::str::from_utf8(&got.body).unwrap());
    assert_eq!(
        &rows[0][..11],
        [
            "id",
            "status",
            "trigger",
            "agent",
            "tenant",
            "started_at",
            "latency_ms",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "model"
        ]
    );
    assert_eq!(
        rows.len(),
        1 + 1201,
        "every invocation, across export pages"
    );
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(rows[1][col("id")], "csv-run");
    assert_eq!(rows[1][col("prompt")], "greet, \"v2\"\nbeta");
    assert_eq!(rows[1][col("input")], awkward);
    let calls = get(&running, "/api/v1/calls.csv?agent=bot", None).await;
    let rows = parse_csv(std::str::from_utf8(&calls.body).unwrap());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1][0], c.id);
    assert_eq!(rows[1].last().unwrap(), awkward);
    running.shutdown().await.unwrap();
}

async fn live_stream_sends_matching_summaries_as_they_are_stored() {
    use http_body_util::BodyExt;
    let (running, _dir) = start("").await;
    let request = http::Request::get(format!(
        "http://{}/api/v1/stream?agent=watched",
        running.api_addr
    ))
    .body(http_body_util::Full::new(bytes::Bytes::new()))
    .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut text = String::new();
    let mut next_frame = async || {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("no event")
            .unwrap()
            .unwrap();
        String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap()
    };
    text.push_str(&next_frame().await);
    assert!(text.starts_with(": connected"));
    let seen = call("live-1", 1, T0, "watched", "t", CallStatus::Success);
    write(
        &running,
        &[call("quiet", 1, T0, "other", "t", CallStatus::Success)],
    );
    write(&running, std::slice::from_ref(&seen));
    while !text.contains("event: invocation") {
        text.push_str(&next_frame().await);
    }
    assert!(text.contains(&format!("\"id\":\"{}\"", seen.id)));
    assert!(text.contains("event: call\ndata: {"));
    assert!(!text.contains("quiet"), "filtered out");
    running.shutdown().await.unwrap();
}

async fn proxied_calls_appear_in_lists() {
    let mock = MockUpstream::start(|_| MockResponse::json(200, r#"{"choices":[]}"#)).await;
    let (running, _dir) = start(&provider_toml("mock", "openai", &mock.url())).await;
    let got = post_json(
        running.proxy_addr,
        "/mock/v1/chat/completions",
        &[("x-llmtap-agent", "proxied")],
        "{}",
    )
    .await;
    wait_call(&running, &got.call_id()).await;
    let list = ok_json(&running, "/api/v1/calls?agent=proxied").await;
    assert_eq!(ids(&list), vec![got.call_id()]);
    running.shutdown().await.unwrap();
}

async fn model_filter_matches_requested_or_answered_and_groups_by_requested() {
    let (running, _dir) = start("").await;
    let mut answered = call("m-1", 1, T0, "bot", "t", CallStatus::Success);
    answered.model = Some("gpt-4o".into());
    answered.response_model = Some("gpt-4o-2024-08-06".into());
    let mut failed = call("m-2", 1, T0 + 1_000, "bot", "t", CallStatus::Failed);
    failed.model = Some("gpt-4o".into());
    failed.response_model = None;
    let mut other = call("m-3", 1, T0 + 2_000, "bot", "t", CallStatus::Success);
    other.model = Some("gpt-4o-mini".into());
    other.response_model = Some("gpt-4o-mini-2024-07-18".into());
    write(&running, &[answered.clone(), failed.clone(), other]);
    let total = |v: &Value| v["total"].as_u64().unwrap();
    let page = ok_json(&running, "/api/v1/calls?model=gpt-4o").await;
    assert_eq!(ids(&page), vec![failed.id.clone(), answered.id.clone()]);
    assert_eq!(total(&page), 2);
    let dated = ok_json(&running, "/api/v1/calls?model=gpt-4o-2024-08-06").await;
    assert_eq!(ids(&dated), vec![answered.id.clone()]);
    assert_eq!(total(&dated), 1);
    // Both names of one call ORed: the call counts once.
    let both = ok_json(&running, "/api/v1/calls?model=gpt-4o,gpt-4o-2024-08-06").await;
    assert_eq!(total(&both), 2);
    assert_eq!(both["count"], 2);
    // With a second filter (the facet-cache path) too.
    let paired = ok_json(
        &running,
        "/api/v1/calls?model=gpt-4o&agent=bot&status=success",
    )
    .await;
    assert_eq!(ids(&paired), vec![answered.id.clone()]);
    assert_eq!(total(&paired), 1);
    // Lists show both names.
    let item = &dated["items"][0];
    assert_eq!(item["model"], "gpt-4o");
    assert_eq!(item["response_model"], "gpt-4o-2024-08-06");
    // Grouping by what was requested: one group, one success of two.
    let stats = ok_json(&running, "/api/v1/stats?group_by=model&model=gpt-4o").await;
    let groups = stats["items"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{stats}");
    assert_eq!(groups[0]["group"], "gpt-4o");
    assert_eq!(groups[0]["calls"], 2);
    assert_eq!(groups[0]["success_rate"], 0.5);
    // Invocations: filter on either name, show both.
    let runs = ok_json(&running, "/api/v1/invocations?model=gpt-4o-2024-08-06").await;
    assert_eq!(total(&runs), 1);
    assert_eq!(runs["items"][0]["models"], serde_json::json!(["gpt-4o"]));
    assert_eq!(
        runs["items"][0]["response_models"],
        serde_json::json!(["gpt-4o-2024-08-06"])
    );
    let runs = ok_json(&running, "/api/v1/invocations?model=gpt-4o").await;
    assert_eq!(total(&runs), 2);
    running.shutdown().await.unwrap();
}

async fn session_costs_are_exact_picodollar_sums() {
    let (running, _dir) = start("").await;
    // Three costs whose float sum drifts: 0.001 + 0.00101 + 0.00104 = 0.0030499999999999998.
    let calls: Vec<CallRecord> = [1_000_000_000u64, 1_010_000_000, 1_040_000_000]
        .iter()
        .enumerate()
        .map(|(i, pusd)| {
            let mut c = synthetic_call(
                "sess-run",
                i as u32 + 1,
                T0 + i as u64 * 1000,
                "bot",
                "t",
                Some("chat-cost"),
                0,
                CallStatus::Success,
                10,
                1,
            );
            let cost = c.cost.as_mut().unwrap();
            cost.priced = true;
            cost.total_pusd = *pusd;
            cost.total_usd = Some(*pusd as f64 / 1e12);
            c.cost_usd = cost.total_usd;
            c
        })
        .collect();
    for c in &calls {
        write(&running, std::slice::from_ref(c));
    }
    let s = ok_json(&running, "/api/v1/sessions/chat-cost").await;
    assert_eq!(s["cost_pusd"], 3_050_000_000u64, "{s}");
    assert_eq!(s["cost_usd"].as_f64(), Some(0.00305), "{s}");
    let list = ok_json(&running, "/api/v1/sessions").await;
    assert_eq!(list["items"][0]["cost_usd"].as_f64(), Some(0.00305));
    running.shutdown().await.unwrap();
}

async fn audit_entries_record_the_query_string_as_sent() {
    let (running, _dir) = start("").await;
    let mut c = call("audit-run", 1, T0, "bot", "t", CallStatus::Success);
    c.request_body = Some("{\"model\":\"m\"}".into());
    write(&running, std::slice::from_ref(&c));
    for path in [
        "/api/v1/calls?q=tokio&agent=bot".to_string(),
        "/api/v1/calls.csv?agent=bot".to_string(),
        format!("/api/v1/calls/{}/raw?part=request", c.id),
    ] {
        let got = get(&running, &path, None).await;
        assert_eq!(
            got.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&got.body)
        );
    }
    let log = ok_json(&running, "/api/v1/audit").await;
    let mut paths: Vec<String> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    paths.sort();
    let mut expected = vec![
        "/api/v1/calls.csv?agent=bot".to_string(),
        "/api/v1/calls?q=tokio&agent=bot".to_string(),
        format!("/api/v1/calls/{}/raw?part=request", c.id),
    ];
    expected.sort();
    assert_eq!(paths, expected);
    running.shutdown().await.unwrap();
}

// ------------------------------------------------ issue 35: GET /prompt-logs

/// `GET /api/v1/prompt-logs` on both engines: the content of each LLM call, newest
/// first; the 7-day window when nothing narrows the read; offset and cursor paging;
/// run, session, endpoint, time and tenant filters; 400s; admins only, tenant
/// confinement, and an audit entry per read.
async fn prompt_logs_read_prompts_newest_first_in_windows_pages_and_filters_for_admins_only() {
    use llmtap::record::Endpoint;
    let toml = [
        token_toml("root", "admin-token", "admin", None),
        token_toml("watcher", "viewer-token", "viewer", None),
        token_toml("acme-admin", "acme-admin-token", "admin", Some("acme")),
    ]
    .concat();
    let (running, _dir) = start(&toml).await;
    let admin = Some("admin-token");
    let now = llmtap::timefmt::now_unix_us();
    let hour = 3_600_000_000u64;
    // Recent: a three-round run in a session (acme), and 30 one-round runs (globex),
    // half on OpenAI's chat completions, half on Anthropic's messages.
    let mut recent: Vec<CallRecord> = (1..=3u32)
        .map(|r| {
            let mut c = synthetic_call(
                "audit-run",
                r,
                now - 10 * hour + u64::from(r) * 1_000_000,
                "auditor",
                "acme",
                Some("sess-audit"),
                0,
                CallStatus::Success,
                100,
                10,
            );
            c.endpoint = Some(Endpoint::ChatCompletions);
            c.request.as_mut().unwrap().tools = vec![
                serde_json::json!({"type": "function", "function": {"name": "lookup_ticket"}}),
            ];
            c
        })
        .collect();
    for i in 0..30u64 {
        let mut c = call(
            &format!("bulk-{i}"),
            1,
            now - 2 * hour - i * 1_000_000,
            "bulk",
            "globex",
            CallStatus::Success,
        );
        c.endpoint = Some(if i % 2 == 0 {
            Endpoint::ChatCompletions
        } else {
            Endpoint::Messages
        });
        recent.push(c);
    }
    // A tool HTTP call of the run: no prompt, never listed.
    let mut tool = call(
        "audit-run",
        0,
        now - 10 * hour + 1_500_000,
        "auditor",
        "acme",
        CallStatus::Success,
    );
    tool.kind = "http".into();
    tool.provider = "tracking".into();
    recent.push(tool.clone());
    // Old: 30 days ago, outside the default window.
    let old = call(
        "old-run",
        1,
        now - 30 * 24 * hour,
        "bulk",
        "globex",
        CallStatus::Success,
    );
    recent.push(old.clone());
    // Not parsed: no request view.
    let mut unparsed = call(
        "odd-run",
        1,
        now - hour,
        "odd",
        "globex",
        CallStatus::Success,
    );
    unparsed.request = None;
    unparsed.parse_notes = vec!["request body is not JSON".into()];
    recent.push(unparsed.clone());
    write(&running, &recent);

    // Admins only.
    assert_eq!(get(&running, "/api/v1/prompt-logs", None).await.status, 401);
    let got = get(&running, "/api/v1/prompt-logs", Some("viewer-token")).await;
    assert_eq!(got.status, 403, "{}", String::from_utf8_lossy(&got.body));

    // The default: the last 7 days, newest first, 20 a page.
    let page = get(&running, "/api/v1/prompt-logs", admin).await;
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    let page = page.json();
    assert_eq!(page["applied_time_window_days"], 7, "{page}");
    assert_eq!(page["limit"], 20);
    assert_eq!(page["count"], 20);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["next_offset"], 20);
    let first = &page["items"][0];
    assert_eq!(first["id"], unparsed.id.as_str(), "newest first");
    assert_eq!(first["parse_incomplete"], true);
    assert_eq!(first["parse_notes"][0], "request body is not JSON");
    let times: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| llmtap::timefmt::parse_rfc3339_us(i["occurred_at"].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    // Every page by offset: each LLM call of the window once, the tool call and the
    // old call never.
    let mut seen: Vec<String> = Vec::new();
    let mut offset = 0;
    loop {
        let page = ok_json_as(
            &running,
            &format!("/api/v1/prompt-logs?limit=7&offset={offset}"),
            admin,
        )
        .await;
        seen.extend(ids(&page));
        match page["next_offset"].as_u64() {
            Some(n) => offset = n,
            None => {
                assert_eq!(page["has_more"], false);
                break;
            }
        }
    }
    assert_eq!(
        seen.len(),
        34,
        "3 rounds, 30 bulk calls and the unparsed one"
    );
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 34);
    assert!(!seen.contains(&tool.id) && !seen.contains(&old.id));
    // The same by cursor.
    let mut by_cursor: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/prompt-logs?limit=9&cursor={c}"),
            None => "/api/v1/prompt-logs?limit=9".to_string(),
        };
        let page = ok_json_as(&running, &path, admin).await;
        by_cursor.extend(ids(&page));
        assert!(page["next_offset"].is_null() || cursor.is_none());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(by_cursor, seen, "cursor and offset walk the same order");

    // A run: its rounds, newest first, with their content; no window applied.
    let run = ok_json_as(&running, "/api/v1/prompt-logs?run_id=audit-run", admin).await;
    assert!(run["applied_time_window_days"].is_null());
    let rounds: Vec<u64> = run["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["turn_index"].as_u64().unwrap())
        .collect();
    assert_eq!(rounds, [3, 2, 1]);
    let r2 = &run["items"][1];
    assert_eq!(r2["run_id"], "audit-run");
    assert_eq!(
        r2["session_id"],
        recent[1].metadata.session_id.as_deref().unwrap()
    );
    assert_eq!(
        r2["system_prompt"],
        "You are auditor, a helpful support agent."
    );
    assert_eq!(r2["messages"][0]["role"], "user");
    assert!(r2["messages"][0]["content"]
        .as_str()
        .unwrap()
        .starts_with("Please summarise ticket"));
    assert_eq!(r2["messages"][1]["role"], "tool");
    assert!(r2["prompt"]
        .as_str()
        .unwrap()
        .starts_with("system: You are auditor"));
    assert!(r2["prompt"]
        .as_str()
        .unwrap()
        .contains("\n\nuser: Please summarise"));
    assert_eq!(r2["response"], "Done.");
    assert_eq!(r2["response_tool_calls"][0]["name"], "lookup_ticket");
    assert_eq!(r2["tools_offered"], true);
    assert_eq!(r2["tool_names"], serde_json::json!(["lookup_ticket"]));
    assert_eq!(r2["endpoint"], "chat_completions");
    assert_eq!(r2["parse_incomplete"], false);
    assert_eq!(r2["occurred_at"], recent[1].started_at.as_str());
    // A session: the same three.
    let session = ok_json_as(&running, "/api/v1/prompt-logs?session_id=sess-audit", admin).await;
    assert_eq!(ids(&session), ids(&run));
    // Endpoint kind: the bulk calls on Anthropic's messages.
    let messages = ok_json_as(
        &running,
        "/api/v1/prompt-logs?endpoint=messages&limit=200",
        admin,
    )
    .await;
    assert_eq!(messages["count"], 15, "{messages}");
    assert!(messages["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["endpoint"] == "messages"));
    // A time range: the old call alone.
    let from = llmtap::timefmt::format_rfc3339_us(now - 31 * 24 * hour);
    let to = llmtap::timefmt::format_rfc3339_us(now - 29 * 24 * hour);
    let range = ok_json_as(
        &running,
        &format!("/api/v1/prompt-logs?from={from}&to={to}"),
        admin,
    )
    .await;
    assert_eq!(ids(&range), vec![old.id.clone()]);
    assert!(range["applied_time_window_days"].is_null());

    // Tenant confinement: an admin of acme sees acme's calls only.
    let acme = ok_json_as(
        &running,
        "/api/v1/prompt-logs?limit=200",
        Some("acme-admin-token"),
    )
    .await;
    assert_eq!(acme["count"], 3, "{acme}");
    assert!(acme["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["tenant"] == "acme"));
    let other = get(
        &running,
        "/api/v1/prompt-logs?tenant=globex",
        Some("acme-admin-token"),
    )
    .await;
    assert_eq!(other.status, 403);
    let other_run = get(
        &running,
        "/api/v1/prompt-logs?run_id=bulk-1",
        Some("acme-admin-token"),
    )
    .await;
    assert_eq!(other_run.status, 403);

    // Bad parameters: 400 naming the parameter.
    for (query, parameter) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("offset=10001", "offset"),
        ("offset=-1", "offset"),
        ("endpoint=fax", "endpoint"),
        ("from=yesterday", "from"),
        ("from=2026-02-01&to=2026-01-01", "to"),
        ("cursor=nope", "cursor"),
        ("offset=5&cursor=v1000000000000000161", "offset"),
        ("bogus=1", "bogus"),
    ] {
        let got = get(&running, &format!("/api/v1/prompt-logs?{query}"), admin).await;
        assert_eq!(
            got.status,
            400,
            "{query}: {}",
            String::from_utf8_lossy(&got.body)
        );
        assert_eq!(got.json()["error"]["parameter"], parameter, "{query}");
    }

    // Every read is audited, with its query string.
    let audit = ok_json_as(&running, "/api/v1/audit?limit=1000", admin).await;
    let reads: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "read prompt logs")
        .collect();
    assert!(
        reads
            .iter()
            .any(|e| e["path"] == "/api/v1/prompt-logs?run_id=audit-run"),
        "{audit}"
    );
    assert!(reads.iter().any(|e| e["who"] == "acme-admin"));
    running.shutdown().await.unwrap();
}

async fn ok_json_as(running: &Running, path: &str, token: Option<&str>) -> Value {
    let got = get(running, path, token).await;
    assert_eq!(
        got.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&got.body)
    );
    got.json()
}

/// Issue 35: `history` on a call says which leading messages repeat the session's
/// previous run (memory) and this run's previous round, on both engines (PostgreSQL
/// lists a run's calls by start time, a tool call between the rounds).
async fn call_history_counts_memory_from_the_sessions_previous_run_and_the_runs_earlier_rounds() {
    let (running, _dir) = start("").await;
    let text = |role: &str, t: &str| Message {
        role: role.into(),
        text: Some(t.into()),
        ..Message::default()
    };
    let llm = |run: &str, round: u32, t: u64, messages: Vec<Message>, answer: Option<&str>| {
        let mut c = synthetic_call(
            run,
            round,
            t,
            "bot",
            "t",
            Some("hist-s"),
            0,
            CallStatus::Success,
            100,
            10,
        );
        c.request.as_mut().unwrap().messages = messages;
        let response = c.response.as_mut().unwrap();
        response.text = answer.map(str::to_string);
        if answer.is_some() {
            response.tool_calls.clear();
        }
        c
    };
    let first = llm(
        "hist-a",
        1,
        T0,
        vec![text("user", "first question")],
        Some("first answer"),
    );
    let memory = vec![
        text("user", "first question"),
        text("assistant", "first answer"),
    ];
    let question = text("user", "second question");
    // Round 1 asks for a tool (the synthetic answer's tool call).
    let b1 = llm(
        "hist-b",
        1,
        T0 + 5_000_000,
        [memory.clone(), vec![question.clone()]].concat(),
        None,
    );
    let asked = b1.response.as_ref().unwrap().tool_calls[0].clone();
    let mut tool = call("hist-b", 0, T0 + 6_000_000, "bot", "t", CallStatus::Success);
    tool.kind = "http".into();
    tool.provider = "weather".into();
    let echoed = Message {
        role: "assistant".into(),
        tool_calls: vec![llmtap::record::ToolCall {
            // As OpenAI clients send it back: the arguments as JSON text.
            arguments: Value::String(asked.arguments.to_string()),
            ..asked.clone()
        }],
        ..Message::default()
    };
    let result = Message {
        role: "tool".into(),
        text: Some("sunny".into()),
        tool_call_id: asked.id.clone(),
        ..Message::default()
    };
    let b2 = llm(
        "hist-b",
        2,
        T0 + 7_000_000,
        [memory.clone(), vec![question, echoed, result]].concat(),
        Some("second answer"),
    );
    write(&running, std::slice::from_ref(&first));
    write(&running, &[b1.clone(), tool.clone()]);
    write(&running, std::slice::from_ref(&b2));
    let history = |id: String| {
        let running = &running;
        async move { ok_json(running, &format!("/api/v1/calls/{id}")).await["history"].clone() }
    };
    assert_eq!(
        history(first.id.clone()).await,
        serde_json::json!({"memory": 0, "memory_run_id": null, "earlier_rounds": 0})
    );
    assert_eq!(
        history(b1.id.clone()).await,
        serde_json::json!({"memory": 2, "memory_run_id": "hist-a", "earlier_rounds": 0})
    );
    assert_eq!(
        history(b2.id.clone()).await,
        serde_json::json!({"memory": 2, "memory_run_id": "hist-a", "earlier_rounds": 2})
    );
    // A tool call has none.
    assert!(history(tool.id.clone()).await.is_null());
    running.shutdown().await.unwrap();
}
