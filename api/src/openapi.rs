//! `GET /openapi.json`: the API's OpenAPI 3 document. Schemas are generated
//! from the Rust types (`schemars`); the operations are listed in [`PATHS`]
//! next to the router, and a test checks that every listed operation is
//! routed.

use bismuth_model::{FunctionDefinition, FunctionView};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::cluster::NodeView;
use crate::routes::Listed;

/// `{"id": "…"}` returned by `POST /function`.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct Created {
    id: uuid::Uuid,
}

/// `{"error": "…"}` returned with every 4xx and 5xx.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct ErrorBody {
    error: String,
}

/// What a documented operation takes and returns.
#[derive(Clone, Copy, Debug)]
pub struct Operation {
    /// Lowercase HTTP method.
    pub method: &'static str,
    /// Path template, `{id}` style.
    pub path: &'static str,
    /// One-line description.
    pub summary: &'static str,
    /// Request body schema name, if any.
    pub request: Option<&'static str>,
    /// Success response: schema name, or `None` for an empty or plain body.
    pub response: Option<&'static str>,
}

/// Every operation the api serves.
pub const PATHS: &[Operation] = &[
    Operation { method: "get", path: "/healthz", summary: "Liveness: answers OK", request: None, response: None },
    Operation { method: "get", path: "/function", summary: "List functions with their backends (a JSON array); with limit (1-1000) and the cursor a page returned as next, one page in id order: FunctionPage", request: None, response: Some("FunctionList") },
    Operation { method: "post", path: "/function", summary: "Create a function and place its instances", request: Some("FunctionDefinition"), response: Some("Created") },
    Operation { method: "get", path: "/function/{id}", summary: "A function's definition and backends", request: None, response: Some("FunctionView") },
    Operation { method: "put", path: "/function/{id}", summary: "New definition, or empty body to redeploy: a rollout the controller carries out; returns once the new instances run and the old ones are gone (query timeout_ms)", request: Some("FunctionDefinition"), response: Some("FunctionView") },
    Operation { method: "delete", path: "/function/{id}", summary: "Delete a function, its routes and containers", request: None, response: None },
    Operation { method: "get", path: "/function/{id}/logs", summary: "Containers' output (the newest --log-max-bytes each); tail=N the last N lines; follow=true streams Server-Sent Events", request: None, response: None },
    Operation { method: "put", path: "/function/{id}/secrets/{key}", summary: "Set a secret (body is the value); never readable through the api", request: None, response: None },
    Operation { method: "delete", path: "/function/{id}/secrets/{key}", summary: "Delete a secret", request: None, response: None },
    Operation { method: "get", path: "/function/{id}/calls", summary: "The function's last invocations from every node, newest first (query limit, 1-1000, default 100)", request: None, response: Some("Calls") },
    Operation { method: "get", path: "/metrics", summary: "Prometheus metrics (text format)", request: None, response: None },
    Operation { method: "get", path: "/node", summary: "Nodes with state, liveness, capacity and load", request: None, response: Some("NodeList") },
    Operation { method: "post", path: "/node/{ip}/drain", summary: "No new containers on the node; with evacuate, its instances move to other nodes (409 when they lack room)", request: Some("DrainRequest"), response: None },
    Operation { method: "post", path: "/node/{ip}/undrain", summary: "The node takes new containers again; an evacuation ends", request: None, response: None },
    Operation { method: "get", path: "/controller", summary: "Which api process runs the controller, and whether it is this one", request: None, response: None },
    Operation { method: "get", path: "/stats", summary: "Live figures per function (status, instances, request rate, error ratio, p50/p99 ms, cold starts) and per node (liveness, capacity, use, rate), read from the daemons' /metrics every 2 s while asked; rates over the last 10 s", request: None, response: Some("Stats") },
    Operation { method: "get", path: "/stats/function/{id}", summary: "A function's figures now (as in /stats) and its points over the last ten minutes (rate, error ratio, p50/p99, cold, desired and running instances), for charts", request: None, response: Some("StatsHistory") },
    Operation { method: "get", path: "/ui/", summary: "The web dashboard (HTML; /ui/login signs a browser in with the token)", request: None, response: None },
    Operation { method: "get", path: "/openapi.json", summary: "This document", request: None, response: None },
];

/// Builds the document.
pub fn document() -> Value {
    let mut gen = SchemaSettings::openapi3().into_generator();
    let mut named = Map::new();
    named.insert(
        "FunctionDefinition".into(),
        gen.subschema_for::<FunctionDefinition>().to_value(),
    );
    named.insert(
        "FunctionView".into(),
        gen.subschema_for::<FunctionView>().to_value(),
    );
    named.insert(
        "FunctionList".into(),
        gen.subschema_for::<Vec<Listed>>().to_value(),
    );
    named.insert(
        "FunctionPage".into(),
        gen.subschema_for::<crate::routes::Page>().to_value(),
    );
    named.insert(
        "NodeList".into(),
        gen.subschema_for::<Vec<NodeView>>().to_value(),
    );
    named.insert(
        "Calls".into(),
        gen.subschema_for::<bismuth_model::Calls>().to_value(),
    );
    named.insert(
        "Stats".into(),
        gen.subschema_for::<crate::stats::Summary>().to_value(),
    );
    named.insert(
        "StatsHistory".into(),
        gen.subschema_for::<crate::stats::History>().to_value(),
    );
    named.insert("Created".into(), gen.subschema_for::<Created>().to_value());
    named.insert(
        "DrainRequest".into(),
        gen.subschema_for::<crate::routes::DrainRequest>()
            .to_value(),
    );
    named.insert("Error".into(), gen.subschema_for::<ErrorBody>().to_value());
    let mut schemas = gen.take_definitions(true);
    // List types are inline schemas; give them names too.
    for name in ["FunctionList", "NodeList"] {
        if let Some(s) = named.get(name) {
            schemas.insert(name.into(), s.clone());
        }
    }

    let mut paths = Map::new();
    for op in PATHS {
        let mut operation = json!({
            "summary": op.summary,
            "responses": {
                "200": match op.response {
                    Some(name) => json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}}),
                    None => json!({"description": "OK"}),
                },
                "4XX": {"description": "Client error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "5XX": {"description": "Unavailable", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        let params: Vec<Value> = ["id", "key"]
            .iter()
            .filter(|p| op.path.contains(&format!("{{{p}}}")))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        if let Some(name) = op.request {
            operation["requestBody"] = json!({
                "required": op.method == "post",
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}},
            });
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Bismuth API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Control plane of the Bismuth FaaS orchestrator (wire-compatible with the original Bismuth API).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    })
}
