//! Google's discovery documents (`tests/google/*.json`, from the `google-api-python-client`
//! wheel: `tests/google/README.md`) as the judge of the fake Google: every request the
//! connector sends is checked against its method (no undeclared query parameter, every
//! required one present, enum values and scalar types respected), and every `2xx` body the fake
//! answers is checked against the method's response schema (no undeclared member, types and
//! formats as declared: 64-bit integers as strings, RFC 3339 date-times). A violation answers
//! `400` and is recorded; [`Discovery::assert_clean`] fails the test on any.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::{Request, Respond, ResponseTemplate};

/// One discovery document and the violations seen against it.
#[derive(Clone)]
pub struct Discovery {
    doc: Arc<Value>,
    violations: Arc<Mutex<Vec<String>>>,
}

impl Discovery {
    /// Loads `tests/google/{name}` (e.g. `drive.v3.json`).
    pub fn load(name: &str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/google")
            .join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
        let doc: Value = serde_json::from_str(&text).expect("a discovery document is JSON");
        Self {
            doc: Arc::new(doc),
            violations: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The method with this id (`drive.changes.list`).
    pub fn method(&self, id: &str) -> Value {
        fn find(resources: &Value, id: &str) -> Option<Value> {
            for resource in resources.as_object()?.values() {
                if let Some(methods) = resource["methods"].as_object() {
                    if let Some(m) = methods.values().find(|m| m["id"] == id) {
                        return Some(m.clone());
                    }
                }
                if let Some(found) = find(&resource["resources"], id) {
                    return Some(found);
                }
            }
            None
        }
        find(&self.doc["resources"], id).unwrap_or_else(|| panic!("no method {id}"))
    }

    /// What is wrong with `request` as a call of method `id` (empty: nothing).
    pub fn request_problems(&self, id: &str, request: &Request) -> Vec<String> {
        let method = self.method(id);
        let mut problems = Vec::new();
        if request.method.as_str() != method["httpMethod"] {
            problems.push(format!(
                "{id}: sent {} not {}",
                request.method, method["httpMethod"]
            ));
        }
        let declared = |name: &str| -> Option<Value> {
            let p = &method["parameters"][name];
            if p.is_object() && p["location"] == "query" {
                return Some(p.clone());
            }
            let g = &self.doc["parameters"][name];
            g.is_object().then(|| g.clone())
        };
        let pairs: Vec<(String, String)> = request
            .url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (name, value) in &pairs {
            let Some(p) = declared(name) else {
                problems.push(format!("{id}: undeclared query parameter {name}"));
                continue;
            };
            if let Some(problem) = scalar_problem(&p, value) {
                problems.push(format!("{id}: {name}={value}: {problem}"));
            }
            let repeated = pairs.iter().filter(|(n, _)| n == name).count() > 1;
            if repeated && p["repeated"] != true {
                problems.push(format!("{id}: {name} sent more than once"));
            }
        }
        if let Some(params) = method["parameters"].as_object() {
            for (name, p) in params {
                if p["required"] == true
                    && p["location"] == "query"
                    && !pairs.iter().any(|(n, _)| n == name)
                {
                    problems.push(format!("{id}: required query parameter {name} missing"));
                }
            }
        }
        if let Some(reference) = method["request"]["$ref"].as_str() {
            match serde_json::from_slice::<Value>(&request.body) {
                Ok(body) => self.check(reference, &body, &format!("{id} request"), &mut problems),
                Err(_) => problems.push(format!("{id}: the request body is not JSON")),
            }
        }
        problems
    }

    /// What is wrong with `body` as an instance of schema `reference`.
    pub fn schema_problems(&self, reference: &str, body: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        self.check(reference, body, reference, &mut problems);
        problems
    }

    fn check(&self, reference: &str, value: &Value, at: &str, problems: &mut Vec<String>) {
        let schema = &self.doc["schemas"][reference];
        if !schema.is_object() {
            problems.push(format!("{at}: no schema {reference}"));
            return;
        }
        self.check_schema(schema, value, at, problems);
    }

    fn check_schema(&self, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
        if let Some(reference) = schema["$ref"].as_str() {
            return self.check(reference, value, at, problems);
        }
        let kind = schema["type"].as_str().unwrap_or("any");
        match (kind, value) {
            ("any", _) => {}
            ("object", Value::Object(members)) => {
                let properties = schema["properties"].as_object();
                for (name, member) in members {
                    let where_ = format!("{at}.{name}");
                    match (
                        properties.and_then(|p| p.get(name)),
                        &schema["additionalProperties"],
                    ) {
                        (Some(p), _) => self.check_schema(p, member, &where_, problems),
                        (None, extra) if extra.is_object() => {
                            self.check_schema(extra, member, &where_, problems)
                        }
                        (None, _) => problems.push(format!("{where_}: not declared")),
                    }
                }
            }
            ("array", Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    self.check_schema(&schema["items"], item, &format!("{at}[{i}]"), problems);
                }
            }
            ("string", Value::String(text)) => {
                if let Some(problem) = scalar_problem(schema, text) {
                    problems.push(format!("{at}: {problem}"));
                }
            }
            ("boolean", Value::Bool(_)) => {}
            ("integer", Value::Number(n)) if n.is_i64() || n.is_u64() => {}
            ("number", Value::Number(_)) => {}
            (kind, value) => problems.push(format!("{at}: {value} is not of type {kind}")),
        }
    }

    /// A `2xx` answer to method `id` with `body`, checked against the method's response.
    pub fn answer(&self, id: &str, status: u16, body: Value) -> ResponseTemplate {
        let method = self.method(id);
        if let Some(reference) = method["response"]["$ref"].as_str() {
            let problems = self.schema_problems(reference, &body);
            self.record(problems);
        }
        ResponseTemplate::new(status).set_body_json(body)
    }

    /// A responder for method `id`: checks each request, answers `400` (Google's error
    /// shape) to a bad one, else what `answer` makes of it.
    pub fn responder<F>(&self, id: &str, answer: F) -> Checked<F>
    where
        F: Fn(&Request) -> ResponseTemplate + Send + Sync + 'static,
    {
        Checked {
            discovery: self.clone(),
            id: id.to_string(),
            answer,
        }
    }

    fn record(&self, problems: Vec<String>) {
        if !problems.is_empty() {
            self.violations.lock().expect("violations").extend(problems);
        }
    }

    /// The violations seen so far.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().expect("violations").clone()
    }

    /// Fails the test when any request or answer broke the document.
    pub fn assert_clean(&self) {
        let violations = self.violations();
        assert!(violations.is_empty(), "{violations:#?}");
    }
}

/// A string value's problem against a parameter or schema: enum, format, scalar type.
fn scalar_problem(schema: &Value, value: &str) -> Option<String> {
    if let Some(values) = schema["enum"].as_array() {
        if !values.iter().any(|v| v == value) {
            return Some("not one of the declared values".into());
        }
    }
    let format = schema["format"].as_str().unwrap_or("");
    match (schema["type"].as_str().unwrap_or("string"), format) {
        ("boolean", _) if value != "true" && value != "false" => Some("not a boolean".into()),
        ("integer", _) | (_, "int64" | "uint64" | "int32" | "uint32")
            if value.parse::<i128>().is_err() =>
        {
            Some(format!("not an integer ({format})"))
        }
        (_, "date-time") if chrono::DateTime::parse_from_rfc3339(value).is_err() => {
            Some("not an RFC 3339 date-time".into())
        }
        _ => None,
    }
}

/// A responder that checks requests against the document first.
pub struct Checked<F> {
    discovery: Discovery,
    id: String,
    answer: F,
}

impl<F> Respond for Checked<F>
where
    F: Fn(&Request) -> ResponseTemplate + Send + Sync + 'static,
{
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let problems = self.discovery.request_problems(&self.id, request);
        if problems.is_empty() {
            return (self.answer)(request);
        }
        let message = problems.join("; ");
        self.discovery.record(problems);
        ResponseTemplate::new(400).set_body_json(json!({
            "error": {"code": 400, "message": message, "errors": [{"domain": "global", "reason": "invalidParameter", "message": message}]}
        }))
    }
}

#[test]
fn the_validator_catches_what_the_connector_must_never_send_or_receive() {
    let drive = Discovery::load("drive.v3.json");
    // An answer with an undeclared member, an int64 as a number and a bad date-time.
    let problems = drive.schema_problems(
        "ChangeList",
        &json!({"changes": [{"time": "yesterday", "file": {"id": "f", "size": 12, "colour": "red"}}], "newStartPageToken": "1"}),
    );
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(drive
        .schema_problems(
            "ChangeList",
            &json!({"kind": "drive#changeList", "newStartPageToken": "7", "changes": []})
        )
        .is_empty());
    let calendar = Discovery::load("calendar.v3.json");
    assert!(calendar.method("calendar.events.list")["parameters"]["orderBy"]["enum"].is_array());
    let _ = scalar_problem(
        &json!({"type": "string", "enum": ["startTime", "updated"]}),
        "x",
    )
    .expect("an enum violation");
    assert!(scalar_problem(&json!({"type": "boolean"}), "yes").is_some());
    assert!(scalar_problem(&json!({"type": "integer"}), "250").is_none());
}

/// A request breaking the document in each of the three ways is answered `400` and recorded;
/// a good one passes.
#[tokio::test]
async fn requests_are_judged_by_their_method() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer};

    let server = MockServer::start().await;
    let calendar = Discovery::load("calendar.v3.json");
    Mock::given(method("GET"))
        .and(path("/calendar/v3/calendars/primary/events"))
        .respond_with(calendar.responder("calendar.events.list", |_| {
            ResponseTemplate::new(200).set_body_json(json!({"items": []}))
        }))
        .mount(&server)
        .await;
    let drive = Discovery::load("drive.v3.json");
    Mock::given(method("GET"))
        .and(path("/drive/v3/changes"))
        .respond_with(drive.responder("drive.changes.list", |_| {
            ResponseTemplate::new(200).set_body_json(json!({"newStartPageToken": "1"}))
        }))
        .mount(&server)
        .await;
    let get = |query: &str, on: &str| {
        let url = format!("{}{on}?{query}", server.uri());
        async move { reqwest::get(url).await.expect("sent").status().as_u16() }
    };
    let events = "/calendar/v3/calendars/primary/events";
    assert_eq!(get("syncToken=a&showDeleted=true", events).await, 200);
    assert_eq!(
        get("pageToken=5&includeRemoved=true", "/drive/v3/changes").await,
        200
    );
    assert!(calendar.violations().is_empty() && drive.violations().is_empty());

    assert_eq!(get("orderBy=created", events).await, 400);
    assert_eq!(get("showDeleted=yes", events).await, 400);
    assert_eq!(get("includeRemoved=true", "/drive/v3/changes").await, 400);
    assert_eq!(
        get("pageToken=5&colour=red", "/drive/v3/changes").await,
        400
    );
    let calendar_seen = calendar.violations();
    assert!(calendar_seen[0].contains("orderBy"), "{calendar_seen:?}");
    assert!(
        calendar_seen[1].contains("showDeleted"),
        "{calendar_seen:?}"
    );
    let drive_seen = drive.violations();
    assert!(
        drive_seen[0].contains("required query parameter pageToken"),
        "{drive_seen:?}"
    );
    assert!(
        drive_seen[1].contains("undeclared query parameter colour"),
        "{drive_seen:?}"
    );
}
