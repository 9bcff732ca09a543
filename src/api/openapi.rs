//! The OpenAPI 3.1 description of the read API, served at `/api/v1/openapi.json`.
//!
//! Written from the route table the dispatcher uses (`routes::ROUTES`: paths,
//! parameters, roles, summaries) and from the JSON Schemas the response types derive,
//! so it cannot drift from what the API serves.

use super::params::{ParamIn, ParamKind, ParamSpec};
use super::routes::{Access, Payload, Route, ROUTES};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

fn kind_schema(kind: ParamKind) -> Value {
    match kind {
        ParamKind::String => json!({"type": "string"}),
        ParamKind::Boolean => json!({"type": "boolean"}),
        ParamKind::Integer { min, max, default } => {
            let mut s = json!({"type": "integer", "minimum": min, "maximum": max});
            if let Some(d) = default {
                s["default"] = json!(d);
            }
            s
        }
        ParamKind::Number { min } => json!({"type": "number", "minimum": min}),
        ParamKind::OneOf(values) => json!({"type": "string", "enum": values}),
    }
}

fn param_json(p: &ParamSpec) -> Value {
    json!({
        "name": p.name,
        "in": match p.location { ParamIn::Query => "query", ParamIn::Path => "path" },
        "required": p.location == ParamIn::Path,
        "description": p.description,
        "schema": kind_schema(p.kind),
    })
}

fn error_responses(route: &Route) -> Map<String, Value> {
    let mut out = Map::new();
    let mut add = |code: &str, name: &str| {
        out.insert(
            code.into(),
            json!({"$ref": format!("#/components/responses/{name}")}),
        );
    };
    add("400", "BadParameter");
    if route.access != Access::Public {
        add("401", "Unauthorized");
        add("403", "Forbidden");
        add("503", "StoreOpening");
    }
    if route.path.contains('{') {
        add("404", "NotFound");
    }
    out
}

fn operation(route: &Route, generator: &mut schemars::SchemaGenerator) -> Value {
    let mut parameters: Vec<Value> = route
        .path_params()
        .map(|name| {
            json!({"name": name, "in": "path", "required": true,
                   "description": format!("the {name} of the record"), "schema": {"type": "string"}})
        })
        .collect();
    parameters.extend(route.params.iter().flat_map(|g| g.iter()).map(param_json));
    let schema = match route.reply.payload {
        Payload::Json(schema_fn) => Value::from(schema_fn(generator)),
        Payload::Text => json!({"type": "string"}),
        Payload::Binary => json!({"type": "string", "format": "binary"}),
    };
    let mut responses = error_responses(route);
    responses.insert(
        "200".into(),
        json!({"description": route.reply.description,
               "content": {route.reply.content_type: {"schema": schema}}}),
    );
    let mut op = json!({
        "summary": route.summary,
        "parameters": parameters,
        "responses": responses,
        "x-llmtap-role": match route.access {
            Access::Public => "public",
            Access::Viewer => "viewer",
            Access::Admin => "admin",
        },
    });
    if route.access == Access::Public {
        op["security"] = json!([]);
    }
    if let crate::api::routes::Handler::Ingest(_, body_schema) = route.handler {
        op["requestBody"] = json!({"required": true,
            "content": {"application/json": {"schema": Value::from(body_schema(generator))}}});
    }
    op
}

pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method.as_str().to_ascii_lowercase()] = operation(route, &mut generator);
    }
    // Defines `Error`, which every error response refers to.
    generator.subschema_for::<super::answers::ErrorBody>();
    let schemas = generator.take_definitions(true);
    let error = |description: &str| {
        json!({"description": description,
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "llmtap read API", "version": "1",
                 "description": "Records of LLM calls captured by llmtap. Authorization: Bearer <token> when tokens are configured. Viewers never see bodies, messages, prompts or tool arguments; admin reads of them are audited. x-llmtap-role names the least role an operation needs."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "BadParameter": error("a parameter is unknown or invalid; error.parameter names it"),
                "Unauthorized": error("missing or unknown token"),
                "Forbidden": error("role or tenant does not allow it (no hint whether the record exists)"),
                "NotFound": error("unknown id"),
                "StoreOpening": error("the store is still opening after a start (error type `store_opening`, `Retry-After` header); the proxy already forwards"),
            },
            "schemas": schemas,
        }
    })
}
