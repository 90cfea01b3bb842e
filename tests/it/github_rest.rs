//! GitHub's published REST description (`generated/api.github.com.json` of the npm package
//! `@octokit/openapi`, installed by `npm ci --prefix tests/github`: `tests/github/README.md`)
//! as the judge of the fake GitHub. Every body the fake answers through [`Rest`] (its `200`s
//! and the `404` of a repository gone) is checked, when it is sent, against the response schema
//! the description declares for that status of the operation its request reached (matched on
//! method and path template); a body that does not conform, or a status the operation does not
//! declare, is answered `500` with the violations instead, so the test that served it fails.
//! The fixtures themselves start from the description's own examples ([`example`]). The
//! rate-limit and bad-credentials refusals stay plain wiremock answers: the description
//! declares no body for them on these operations.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Map, Value};
use wiremock::{Request, Respond, ResponseTemplate};

/// The REST description, read once.
fn description() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/github/node_modules/@octokit/openapi/generated/api.github.com.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
            panic!(
                "{} cannot be read ({err}). Install GitHub's REST description with \
                 `npm ci --prefix tests/github` (Node.js and npm needed).",
                path.display()
            )
        });
        serde_json::from_str(&text).expect("the REST description is JSON")
    })
}

/// The value of the description's example `name` (`components.examples`).
pub fn example(name: &str) -> Value {
    description()["components"]["examples"][name]["value"].clone()
}

/// The path template of `method` that `path` reaches: the one with the most literal
/// segments among those that match (`/repos/o/r/issues/comments` is
/// `/repos/{owner}/{repo}/issues/comments`, not `…/issues/{issue_number}`).
fn template(method: &str, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let paths = description()["paths"].as_object()?;
    paths
        .iter()
        .filter(|(_, item)| item.get(method).is_some())
        .filter_map(|(tpl, _)| {
            let parts: Vec<&str> = tpl.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (p, s) in parts.iter().zip(&segments) {
                if p.starts_with('{') && p.ends_with('}') {
                    if s.is_empty() {
                        return None;
                    }
                } else if p == s {
                    literal += 1;
                } else {
                    return None;
                }
            }
            Some((literal, tpl.clone()))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, tpl)| tpl)
}

/// OpenAPI 3.0's `nullable` as JSON Schema: `null` joins the types (or the enum), and a
/// nullable schema without a type (a `$ref`, an `allOf`) becomes "that or null". A `oneOf` is
/// read as `anyOf`: the alternatives GitHub lists (an event's payload, a user's views) do not
/// exclude each other, and the description's own examples match several of them.
fn json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(object) => {
            let mut out: Map<String, Value> = object
                .iter()
                .filter(|(k, _)| k.as_str() != "nullable" && k.as_str() != "discriminator")
                .map(|(k, v)| {
                    let key = if k == "oneOf" { "anyOf" } else { k.as_str() };
                    (key.to_string(), json_schema(v))
                })
                .collect();
            if object.get("nullable") != Some(&Value::Bool(true)) {
                return Value::Object(out);
            }
            if let Some(Value::Array(values)) = out.get_mut("enum") {
                values.push(Value::Null);
            }
            match out.get("type").cloned() {
                Some(Value::String(t)) => {
                    out.insert("type".into(), json!([t, "null"]));
                    Value::Object(out)
                }
                _ => json!({ "anyOf": [Value::Object(out), { "type": "null" }] }),
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(json_schema).collect()),
        other => other.clone(),
    }
}

/// The names of the component schemas `schema` refers to, transitively.
fn referenced(schema: &Value, names: &mut BTreeSet<String>) {
    match schema {
        Value::Object(object) => {
            if let Some(name) = object
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                if names.insert(name.to_string()) {
                    referenced(&description()["components"]["schemas"][name], names);
                }
            }
            object.values().for_each(|v| referenced(v, names));
        }
        Value::Array(items) => items.iter().for_each(|v| referenced(v, names)),
        _ => {}
    }
}

/// The response schema of `template`'s `method` for `status`, with the component schemas it
/// needs, as JSON Schema; `None` when the description declares no JSON body for it.
fn response_schema(method: &str, template: &str, status: u16) -> Option<Value> {
    let doc = description();
    let mut response = &doc["paths"][template][method]["responses"][status.to_string()];
    if let Some(name) = response["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/responses/"))
    {
        response = &doc["components"]["responses"][name];
    }
    let schema = response["content"]["application/json"]["schema"].clone();
    if schema.is_null() {
        return None;
    }
    let mut names = BTreeSet::new();
    referenced(&schema, &mut names);
    let schemas: Map<String, Value> = names
        .into_iter()
        .map(|n| {
            let s = json_schema(&doc["components"]["schemas"][&n]);
            (n, s)
        })
        .collect();
    let mut root = json_schema(&schema);
    if let Value::Object(object) = &mut root {
        object.insert("components".into(), json!({ "schemas": schemas }));
    }
    Some(root)
}

type Validators = Mutex<HashMap<String, Arc<jsonschema::Validator>>>;

/// What is wrong with `body` as the `status` answer to `method path` (empty: nothing).
pub fn problems(method: &str, path: &str, status: u16, body: &Value) -> Vec<String> {
    static CACHE: OnceLock<Validators> = OnceLock::new();
    let method = method.to_ascii_lowercase();
    let Some(tpl) = template(&method, path) else {
        return vec![format!(
            "{method} {path} is no operation of GitHub's REST API"
        )];
    };
    let key = format!("{method} {tpl} {status}");
    let cache = CACHE.get_or_init(Default::default);
    let cached = cache.lock().expect("cache").get(&key).cloned();
    let validator = match cached {
        Some(v) => v,
        None => {
            let Some(schema) = response_schema(&method, &tpl, status) else {
                return vec![format!("{key} declares no JSON body")];
            };
            let built = jsonschema::draft4::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("the schema of {key} does not compile: {e}"));
            let built = Arc::new(built);
            cache
                .lock()
                .expect("cache")
                .insert(key.clone(), built.clone());
            built
        }
    };
    validator
        .iter_errors(body)
        .take(10)
        .map(|e| format!("{key}: {e} at {}", e.instance_path()))
        .collect()
}

/// An answer of the fake GitHub: `body` with `headers`, checked against the REST description
/// when it is sent.
#[derive(Clone)]
pub struct Rest {
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
}

impl Rest {
    pub fn new(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    pub fn insert_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

impl Respond for Rest {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let found = problems(
            request.method.as_str(),
            request.url.path(),
            self.status,
            &self.body,
        );
        if !found.is_empty() {
            let report = found.join("\n");
            eprintln!("the fake GitHub's answer does not conform:\n{report}");
            return ResponseTemplate::new(500).set_body_string(report);
        }
        let mut template = ResponseTemplate::new(self.status).set_body_json(&self.body);
        for (name, value) in &self.headers {
            template = template.insert_header(name.as_str(), value.as_str());
        }
        template
    }
}

#[test]
fn the_descriptions_own_examples_conform_and_a_drifting_fixture_does_not() {
    let events = example("repo-events-items");
    assert_eq!(
        problems("GET", "/repos/octocat/Hello-World/events", 200, &events),
        Vec::<String>::new()
    );
    let issues = example("issue-with-repo-items");
    assert_eq!(
        problems("GET", "/issues", 200, &issues),
        Vec::<String>::new()
    );
    let mut drifted = issues.clone();
    drifted[0]["number"] = json!("1347");
    assert!(!problems("GET", "/issues", 200, &drifted).is_empty());
    let mut trimmed = issues;
    if let Some(issue) = trimmed[0].as_object_mut() {
        issue.remove("node_id");
    }
    assert!(!problems("GET", "/issues", 200, &trimmed).is_empty());
    assert_eq!(
        template("get", "/repos/o/r/issues/comments").as_deref(),
        Some("/repos/{owner}/{repo}/issues/comments")
    );
    assert!(!problems("GET", "/nowhere/at/all", 200, &json!({})).is_empty());
}
