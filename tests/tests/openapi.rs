#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The OpenAPI document `docs/openapi.json` against the server: every route of the routing table
//! is documented and every documented operation is routed (so the two cannot drift), the served
//! `GET /openapi.json` is the file byte for byte, and the document holds together (OpenAPI 3.1,
//! every `$ref` resolves, path parameters match their templates, operation ids are unique, every
//! operation names known security schemes, every error is an RFC 9457 problem with its codes).
//!
//! `.ci/schemathesis.sh` checks the rest against a running server: that the answers conform to
//! the schemas, status codes and content types the document gives.

use custody_server::routes::Router;
use custody_tests::harness::{backends, TestServer};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeSet;

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

fn document_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    std::fs::read_to_string(path).expect("docs/openapi.json is readable")
}

fn document() -> Value {
    serde_json::from_str(&document_text()).expect("docs/openapi.json is JSON")
}

/// Every (METHOD, template) the document describes.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    let mut out = BTreeSet::new();
    for (template, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for key in item.keys() {
            if METHODS.contains(&key.as_str()) {
                assert!(out.insert((key.to_uppercase(), template.clone())), "{key} {template} twice");
            }
        }
    }
    out
}

/// Every operation of the document: (METHOD, template, path item, operation).
fn operations(doc: &Value) -> Vec<(String, String, &Value, &Value)> {
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (key, operation) in item.as_object().unwrap() {
            if METHODS.contains(&key.as_str()) {
                out.push((key.to_uppercase(), template.clone(), item, operation));
            }
        }
    }
    out
}

/// The Developer Portal's routes (`/portal` and below) are HTML pages and form posts for a
/// browser, described in docs/portal.md rather than in the API description: an API client has
/// no use for them, and their contract is the page labels of the shared surfaces.md.
fn is_portal_route(template: &str) -> bool {
    template == "/portal" || template.starts_with("/portal/")
}

#[test]
fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let routed: BTreeSet<(String, String)> = Router::default()
        .templates()
        .into_iter()
        .filter(|(_, template)| !is_portal_route(template))
        .map(|(method, template)| (method, template.to_owned()))
        .collect();
    let documented = documented_operations(&document());
    let undocumented: Vec<String> = routed.difference(&documented).map(|(m, t)| format!("{m} {t}")).collect();
    let unrouted: Vec<String> = documented.difference(&routed).map(|(m, t)| format!("{m} {t}")).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes missing from docs/openapi.json: {undocumented:#?}\n\
         operations in docs/openapi.json the server does not route: {unrouted:#?}"
    );
    assert!(routed.contains(&("GET".to_owned(), "/openapi.json".to_owned())), "the document itself is served");
}

#[test]
fn the_document_is_openapi_3_1() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("`openapi` is a string");
    assert!(version.starts_with("3.1"), "openapi version {version}");
    assert!(doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()), "info.title");
    assert!(doc["info"]["version"].as_str().is_some_and(|v| !v.is_empty()), "info.version");
}

/// Follows a local `$ref` (`#/components/...`), or panics naming it.
fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("`{reference}` is not a local reference"));
    doc.pointer(pointer).unwrap_or_else(|| panic!("`{reference}` does not resolve"))
}

/// The object itself, or what its `$ref` names.
fn deref<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => resolve(doc, reference),
        None => value,
    }
}

fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_and_every_component_is_used() {
    let doc = document();
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in &refs {
        resolve(&doc, reference);
    }
    let used: BTreeSet<&str> = refs.iter().copied().collect();
    for (kind, members) in doc["components"].as_object().unwrap() {
        if kind == "securitySchemes" {
            continue;
        }
        for name in members.as_object().unwrap().keys() {
            let reference = format!("#/components/{kind}/{name}");
            assert!(used.contains(reference.as_str()), "{reference} is never used");
        }
    }
}

#[test]
fn operations_are_complete_and_consistent() {
    let doc = document();
    let schemes: BTreeSet<&String> = doc["components"]["securitySchemes"].as_object().unwrap().keys().collect();
    let mut used_schemes = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (method, template, item, operation) in operations(&doc) {
        let at = format!("{method} {template}");
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{at}: operationId"));
        assert!(ids.insert(id.to_owned()), "{at}: operationId `{id}` twice");
        assert!(operation["summary"].as_str().is_some_and(|s| !s.is_empty()), "{at}: summary");
        assert!(operation["tags"].as_array().is_some_and(|t| !t.is_empty()), "{at}: tags");

        // Path parameters: exactly the template's, each required.
        let in_template: BTreeSet<String> = template
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let mut declared = BTreeSet::new();
        for parameter in item["parameters"].as_array().into_iter().chain(operation["parameters"].as_array()).flatten() {
            let parameter = deref(&doc, parameter);
            assert!(parameter["schema"].is_object(), "{at}: parameter {parameter} has a schema");
            if parameter["in"] == "path" {
                assert_eq!(parameter["required"], true, "{at}: path parameter {parameter} is required");
                declared.insert(parameter["name"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(declared, in_template, "{at}: path parameters");

        // Security: an explicit list (empty for public operations) of known schemes.
        let security = operation["security"].as_array().unwrap_or_else(|| panic!("{at}: explicit `security`"));
        for requirement in security {
            for name in requirement.as_object().unwrap().keys() {
                assert!(schemes.contains(name), "{at}: unknown security scheme `{name}`");
                used_schemes.insert(name.clone());
            }
        }

        // Responses: a success, `x-request-id` on each, errors as RFC 9457 problems.
        let responses = operation["responses"].as_object().unwrap_or_else(|| panic!("{at}: responses"));
        assert!(responses.keys().any(|s| s.starts_with('2') || s.starts_with('3')), "{at}: a success response");
        for (status, response) in responses {
            let response = deref(&doc, response);
            let code: u16 = status.parse().unwrap_or_else(|_| panic!("{at}: status `{status}` is a number"));
            assert!(response["description"].as_str().is_some_and(|d| !d.is_empty()), "{at} {status}: description");
            assert!(response["headers"]["x-request-id"].is_object(), "{at} {status}: x-request-id header");
            if (300..400).contains(&code) {
                assert!(response["headers"]["Location"].is_object(), "{at} {status}: Location header");
            }
            let content = response["content"].as_object();
            if code == 204 || (300..400).contains(&code) {
                assert!(content.is_none(), "{at} {status}: no body");
                continue;
            }
            let content = content.unwrap_or_else(|| panic!("{at} {status}: content"));
            if code >= 400 && !content.contains_key("text/html") {
                let problem = &content["application/problem+json"];
                let schema = &problem["schema"];
                assert_eq!(
                    schema["allOf"][0]["$ref"], "#/components/schemas/Problem",
                    "{at} {status}: an RFC 9457 problem"
                );
                assert_eq!(schema["allOf"][1]["properties"]["status"]["const"], code, "{at} {status}: its status");
                let codes = schema["allOf"][1]["properties"]["code"]["enum"].as_array();
                assert!(codes.is_some_and(|c| !c.is_empty()), "{at} {status}: the codes it can answer");
            }
        }

        // A body is described when the handler reads one.
        if let Some(body) = operation.get("requestBody") {
            assert!(body["content"].as_object().is_some_and(|c| !c.is_empty()), "{at}: request body content");
        }
    }
    assert_eq!(used_schemes, schemes.into_iter().cloned().collect(), "every security scheme is used");
}

#[test]
fn request_bodies_are_closed_like_the_servers_structs() {
    // The handlers parse with `deny_unknown_fields`: an unknown field is 400 `invalid_request`.
    let doc = document();
    for (method, template, _, operation) in operations(&doc) {
        let Some(schema) = operation["requestBody"]["content"]["application/json"]["schema"].as_object() else {
            continue;
        };
        if template == "/v1/webhooks/{app_id}" {
            continue; // The identity provider's own formats, parsed leniently.
        }
        let schema = deref(&doc, &Value::Object(schema.clone())).clone();
        assert_eq!(schema["additionalProperties"], false, "{method} {template}: additionalProperties: false");
    }
}

#[tokio::test]
async fn the_served_document_is_the_file() {
    let backend = backends().into_iter().next().expect("a backend");
    let mut server = TestServer::start(backend).await;
    let response = server.http.get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/json");
    assert!(response.headers().contains_key("x-request-id"));
    let served = response.text().await.unwrap();
    assert!(served == document_text(), "GET /openapi.json differs from docs/openapi.json");
    let parsed: Value = serde_json::from_str(&served).unwrap();
    assert!(parsed["openapi"].as_str().unwrap().starts_with("3.1"));
    server.stop().await;
}
