//! The route table, the OpenAPI document and the answers agree: every route the API
//! serves is documented, every documented route answers with the documented content
//! type, and every JSON answer (on recorded exchanges) conforms to its schema, with
//! no field the document does not describe.

use super::recorded::Recorded;
use super::util::*;
use llmtap::api::routes::{Payload, ROUTES};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// The body a route is sent in these tests: a valid report for the ingest route.
fn example_body(route: &llmtap::api::routes::Route) -> &'static str {
    match route.path {
        "/api/v1/ingest/mcp" => {
            r#"{"server":"calc","session_id":"stdio_1","started_at_us":1,"duration_us":5,"request":"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}","response":"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}"}"#
        }
        _ => "",
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            let target = &doc["components"]["schemas"][name];
            assert!(!target.is_null(), "{r} is not in components.schemas");
            resolve(doc, target)
        }
        None => schema,
    }
}

fn type_ok(name: &str, v: &Value) -> bool {
    match name {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

/// Checks `value` against `schema`, strictly: an object whose schema lists properties
/// may hold only those (unless it names additionalProperties).
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if schema == &Value::Bool(true) || schema.as_object().is_some_and(|o| o.is_empty()) {
        return Ok(());
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(branches) = schema[key].as_array() {
            let errors: Vec<String> = branches
                .iter()
                .filter_map(|b| conforms(doc, b, value, at).err())
                .collect();
            if errors.len() == branches.len() {
                return Err(format!("{at}: no branch of {key} fits: {errors:?}"));
            }
            return Ok(());
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for b in all {
            conforms(doc, b, value, at)?;
        }
    }
    match &schema["type"] {
        Value::String(t) if !type_ok(t, value) => {
            return Err(format!("{at}: {value} is not {t}"));
        }
        Value::Array(ts) if !ts.iter().any(|t| type_ok(t.as_str().unwrap_or(""), value)) => {
            return Err(format!("{at}: {value} is none of {ts:?}"));
        }
        _ => {}
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != value {
            return Err(format!("{at}: {value} is not {c}"));
        }
    }
    if let (Some(obj), Some(props)) = (value.as_object(), schema["properties"].as_object()) {
        for required in schema["required"].as_array().into_iter().flatten() {
            let key = required.as_str().unwrap_or_default();
            if !obj.contains_key(key) {
                return Err(format!("{at}: required field {key} missing"));
            }
        }
        for (key, v) in obj {
            let here = format!("{at}.{key}");
            match (props.get(key), &schema["additionalProperties"]) {
                (Some(s), _) => conforms(doc, s, v, &here)?,
                (None, Value::Null) | (None, Value::Bool(false)) => {
                    return Err(format!("{here}: field not described in the document"))
                }
                (None, extra) => conforms(doc, extra, v, &here)?,
            }
        }
    } else if let (Some(obj), Some(extra)) = (
        value.as_object(),
        schema.get("additionalProperties").filter(|s| s.is_object()),
    ) {
        for (key, v) in obj {
            conforms(doc, extra, v, &format!("{at}.{key}"))?;
        }
    }
    if let (Some(items), Some(s)) = (value.as_array(), schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            conforms(doc, s, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The first chunk of a streamed answer (the live stream never ends by itself).
async fn head_and_first_chunk(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    head_and_first_chunk_with(addr, path, &[]).await
}

async fn head_and_first_chunk_with(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    use http_body_util::BodyExt;
    let mut builder = http::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = client().request(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let frame = tokio::time::timeout(Duration::from_secs(5), response.into_body().frame())
        .await
        .expect("no first chunk")
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(frame.data_ref().unwrap()).into_owned();
    (status, content_type, text)
}

/// The route's path with example values of the seeded records in its placeholders.
fn example_path(route: &llmtap::api::routes::Route, call: &str, run: &str, blob: &str) -> String {
    let mut path = route.path.to_string();
    for name in route.path_params() {
        let example = match (route.path.split('{').next().unwrap(), name) {
            ("/api/v1/calls/", "id") => call,
            ("/api/v1/invocations/", "id") => run,
            ("/api/v1/sessions/", "id") => "sess-1",
            ("/api/v1/blobs/", "sha256") => blob,
            other => panic!("add an example value for {other:?} of {}", route.path),
        };
        path = path.replace(&format!("{{{name}}}"), example);
    }
    path
}

/// Query strings that change the shape of a route's answer, tried besides its
/// defaults.
fn shape_variants(path: &str) -> &'static [&'static str] {
    match path {
        "/api/v1/invocations/{id}" => &["", "?calls=false"],
        "/api/v1/sessions/{id}" => &["", "?conversation=true"],
        "/api/v1/stats" => &["", "?group_by=tool", "?group_by=model", "?group_by=day"],
        "/api/v1/ratelimits" => &["", "?series=true"],
        _ => &[""],
    }
}

fn token_toml(name: &str, token: &str, role: &str) -> String {
    let hash = llmtap::config::token_sha256_hex(token);
    format!("[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{hash}\"\nrole = \"{role}\"\n")
}

/// The answers that differ by role and by parameter conform too, field by field: an
/// admin's and a viewer's (redacted: admin-only fields absent), of a run with a tool
/// HTTP call (query string) and an MCP exchange, with and without its call records,
/// a session with its conversation, every shape of `/stats` and the rate-limit
/// series.
#[tokio::test]
async fn answers_of_every_role_and_shape_conform_to_the_document() {
    let toml = [
        token_toml("root", "admin-token", "admin"),
        token_toml("watcher", "viewer-token", "viewer"),
    ]
    .concat();
    let recorded = Recorded::start(&toml).await;
    let seeded = recorded.seed().await;
    let running = &recorded.running;
    let mut tool_run = super::conformance::tool_call_run();
    tool_run[1].path = "/weather?city=paris".into();
    tool_run[2].mcp = Some(llmtap::record::McpExchange {
        transport: "http".into(),
        method: Some("tools/call".into()),
        tool: Some("get_weather".into()),
        session_id: Some("s1".into()),
        is_error: true,
        ..Default::default()
    });
    let run = tool_run[0].invocation_id.clone();
    super::conformance::write(&running.store, tool_run);
    let doc = send(running.api_addr, "GET", "/api/v1/openapi.json", &[], "")
        .await
        .json();
    let mut checked = 0;
    for route in ROUTES {
        if !matches!(route.reply.payload, Payload::Json(_)) || route.method != http::Method::GET {
            continue;
        }
        let roles: &[&str] = match route.access {
            llmtap::api::routes::Access::Admin => &["admin-token"],
            _ => &["admin-token", "viewer-token"],
        };
        let schema = &doc["paths"][route.path]["get"]["responses"]["200"]["content"]
            [route.reply.content_type]["schema"];
        for (call, run) in [
            (seeded.tool_calls[1].as_str(), seeded.tool_run.as_str()),
            ("c_tool_mcp", run.as_str()),
        ] {
            let path = example_path(route, call, run, "");
            for variant in shape_variants(route.path) {
                for token in roles {
                    let auth = format!("Bearer {token}");
                    let target = format!("{path}{variant}");
                    let got = send(
                        running.api_addr,
                        "GET",
                        &target,
                        &[("authorization", &auth)],
                        "",
                    )
                    .await;
                    assert_eq!(got.status, 200, "{target} as {token}");
                    if let Err(e) = conforms(&doc, schema, &got.json(), &target) {
                        panic!("{token}: {e}");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 40, "{checked}");
    // Error answers too: a role refused, an unknown id.
    let error = serde_json::json!({"$ref": "#/components/schemas/Error"});
    for (path, token, status) in [
        ("/api/v1/audit", "viewer-token", 403),
        ("/api/v1/calls/c_nope", "admin-token", 404),
        ("/api/v1/calls", "not-a-token", 401),
    ] {
        let auth = format!("Bearer {token}");
        let got = send(
            running.api_addr,
            "GET",
            path,
            &[("authorization", &auth)],
            "",
        )
        .await;
        assert_eq!(got.status, status, "{path}");
        if let Err(e) = conforms(&doc, &error, &got.json(), path) {
            panic!("{e}");
        }
    }
    recorded.shutdown().await;
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_answers_as_described() {
    let recorded = Recorded::start("").await;
    let seeded = recorded.seed().await;
    let running = &recorded.running;
    let image = running.store.get_call(&seeded.image).unwrap().unwrap();
    let blob = image.attachments[0].sha256.clone().unwrap();

    let doc = send(running.api_addr, "GET", "/api/v1/openapi.json", &[], "")
        .await
        .json();
    assert_eq!(doc["openapi"], "3.1.0");
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.path.to_string(), r.method.as_str().to_lowercase()))
        .collect();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect();
    assert_eq!(served, documented);
    for path in [
        "/api/v1/calls/{id}/raw",
        "/api/v1/blobs/{sha256}",
        "/healthz",
        "/metrics",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path}");
    }
    let call_item = &doc["components"]["schemas"]["CallListItem"]["properties"];
    assert!(call_item.as_object().unwrap().len() >= 27);
    // The answers are the API's own types (`api/answers.rs`), not the stored ones.
    for stored in [
        "CallRecord",
        "CallSummary",
        "InvocationSummary",
        "SessionSummary",
        "AuditEntry",
        "StorageState",
    ] {
        assert!(
            doc["components"]["schemas"][stored].is_null(),
            "{stored} is a stored type"
        );
    }

    for route in ROUTES {
        let mut path = example_path(route, &seeded.tool_calls[1], &seeded.tool_run, &blob);
        if route.path == "/api/v1/ratelimits" {
            path.push_str("?series=true");
        }
        let (status, content_type, body) = if route.reply.content_type == "text/event-stream" {
            head_and_first_chunk(running.api_addr, &path).await
        } else {
            let got = send(
                running.api_addr,
                route.method.as_str(),
                &path,
                &[],
                example_body(route),
            )
            .await;
            (
                got.status,
                got.header("content-type").unwrap_or_default().to_string(),
                String::from_utf8_lossy(&got.body).into_owned(),
            )
        };
        assert_eq!(status, 200, "{path}: {body}");
        let want = route.reply.content_type.split(';').next().unwrap();
        match route.reply.payload {
            Payload::Binary => {}
            _ => assert!(
                content_type.starts_with(want),
                "{path}: {content_type}, documented {want}"
            ),
        }
        assert!(!body.is_empty(), "{path}");
        if let Payload::Json(_) = route.reply.payload {
            let value: Value = serde_json::from_str(&body).unwrap();
            let schema = &doc["paths"][route.path][route.method.as_str().to_lowercase()]
                ["responses"]["200"]["content"][route.reply.content_type]["schema"];
            assert!(!schema.is_null(), "{path}: no schema");
            if let Err(e) = conforms(&doc, schema, &value, route.path) {
                panic!("{e}");
            }
        }
        // The route's parameters are the ones it accepts: anything else is a 400.
        if route.method != http::Method::GET {
            // Report routes take a body, not parameters.
            continue;
        }
        let sep = if path.contains('?') { '&' } else { '?' };
        let got = send(
            running.api_addr,
            "GET",
            &format!("{path}{sep}undocumented=1"),
            &[],
            "",
        )
        .await;
        assert_eq!(got.status, 400, "{path} accepted an undocumented parameter");
        assert_eq!(got.json()["error"]["parameter"], "undocumented");
        let error = serde_json::json!({"$ref": "#/components/schemas/Error"});
        if let Err(e) = conforms(&doc, &error, &got.json(), &path) {
            panic!("{e}");
        }
    }
    let got = send(running.api_addr, "GET", "/api/v1/nothing-here", &[], "").await;
    assert_eq!(got.status, 404);
    recorded.shutdown().await;
}

#[tokio::test]
async fn the_dispatcher_enforces_each_routes_role() {
    let sha = llmtap::config::token_sha256_hex;
    let toml = format!(
        "[[api.tokens]]\nname = \"viewer\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
        sha("view-token")
    );
    let recorded = Recorded::start(&toml).await;
    let running = &recorded.running;
    let auth = [("authorization", "Bearer view-token")];
    for route in ROUTES {
        let path = route
            .path
            .replace("{id}", "c_x")
            .replace("{sha256}", &"0".repeat(64));
        let method = route.method.as_str();
        let anonymous = send(running.api_addr, method, &path, &[], example_body(route)).await;
        if route.reply.content_type == "text/event-stream" {
            // The live stream never ends: its head and first chunk are the answer.
            assert_eq!(anonymous.status, 401, "{path}");
            let (status, _, _) = head_and_first_chunk_with(running.api_addr, &path, &auth).await;
            assert_eq!(status, 200, "{path}");
            continue;
        }
        let viewer = send(running.api_addr, method, &path, &auth, example_body(route)).await;
        match route.access {
            llmtap::api::routes::Access::Public => assert_ne!(anonymous.status, 401, "{path}"),
            llmtap::api::routes::Access::Viewer => {
                assert_eq!(anonymous.status, 401, "{path}");
                assert_ne!(viewer.status, 401, "{path}");
                assert_ne!(viewer.status, 403, "{path}");
            }
            llmtap::api::routes::Access::Admin => {
                assert_eq!(anonymous.status, 401, "{path}");
                assert_eq!(viewer.status, 403, "{path}");
            }
        }
    }
    recorded.shutdown().await;
}
