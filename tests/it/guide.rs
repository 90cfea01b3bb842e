//! The integration guide (`docs/integration/connectors-service.md`) is checked against the code:
//! the routes, headers and query parameters it names, its endpoint table, its JSON examples
//! (validated against the OpenAPI schemas), its error codes and error table; its walkthrough
//! runs against a fresh service; its frontend section, webhook table and quoted Core client
//! stay true to the code; and the reference integration (`examples/core-integration/`) is
//! driven in headless Chromium.
//!
//! Conventions the guide follows (described in `docs/integration/maintaining-the-guide.md`):
//! - `<!-- example: METHOD /path STATUS [note] -->` or `<!-- example: METHOD /path request -->`
//!   on the line before every ```` ```json ```` block;
//! - `<!-- walkthrough -->` on the line before each ```` ```sh ```` block that CI runs, in order,
//!   with `CONNECTORS_URL`, `CONNECTORS_TOKEN`, `TENANT` and `CORE_URL` set;
//! - the endpoint table starts with `| operation |`, the error table with `| status | code |`,
//!   the frontend tables with `| connection status |` and `| callback code |`, the webhook
//!   table with `| provider | by webhook |`;
//! - the one ```` ```js ```` block is the reference Core's client, quoted from `server.mjs`;
//! - `METHOD /api/...` names a route of Core's (the reference server), not of the service.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use connectors::connector::ProviderCallError;
use connectors::http::{ApiError, ErrorCode};
use connectors::oauth::FlowError;
use connectors::store::StoreError;
use serde_json::{json, Value};

use crate::helpers::{json, tenant, TestApp, TestDatabase, TOKEN};

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// The OpenAPI tags of the routes meant for Core.
const CORE_TAGS: [&str; 7] = [
    "providers",
    "connect",
    "connections",
    "signals",
    "jobs",
    "endpoints",
    "tenants",
];
/// The most lines the guide may have.
const MAX_LINES: usize = 450;
/// Where the reference Core's client starts and ends in `server.mjs`.
const CLIENT_BEGIN: &str = "// guide:core-client:begin";
const CLIENT_END: &str = "// guide:core-client:end";
/// Where the reference Core sends users back to; the walkthrough's `CORE_URL`.
const CORE_URL: &str = "http://127.0.0.1:3000";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

fn openapi() -> Value {
    serde_json::from_str(connectors::openapi::json()).expect("the OpenAPI document is JSON")
}

// ---------------------------------------------------------------------------------------------
// Reading the guide

/// A fenced block with the marker comment on the line before it, if any.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    marker: Option<String>,
    body: String,
}

struct Guide {
    text: String,
    /// Every line outside fenced blocks, with its 1-based number.
    prose: Vec<(usize, String)>,
    blocks: Vec<Block>,
}

impl Guide {
    fn load() -> Self {
        let text = read("docs/integration/connectors-service.md");
        let mut prose = Vec::new();
        let mut blocks = Vec::new();
        let mut open: Option<Block> = None;
        let mut last_nonempty: Option<String> = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let trimmed = line.trim();
            if let Some(block) = open.as_mut() {
                if trimmed == "```" {
                    blocks.push(open.take().expect("open block"));
                    last_nonempty = None;
                } else {
                    block.body.push_str(line);
                    block.body.push('\n');
                }
                continue;
            }
            if let Some(lang) = trimmed.strip_prefix("```") {
                let marker = last_nonempty
                    .as_deref()
                    .and_then(|l| l.strip_prefix("<!--"))
                    .and_then(|l| l.strip_suffix("-->"))
                    .map(|l| l.trim().to_string());
                open = Some(Block {
                    line: number,
                    lang: lang.trim().to_string(),
                    marker,
                    body: String::new(),
                });
                continue;
            }
            if !trimmed.is_empty() {
                last_nonempty = Some(trimmed.to_string());
            }
            prose.push((number, line.to_string()));
        }
        assert!(open.is_none(), "the guide has an unclosed code block");
        Self {
            text,
            prose,
            blocks,
        }
    }

    /// The rows of the table whose header row starts with `header`, as cells, with line numbers.
    fn table(&self, header: &str) -> (Vec<String>, Vec<(usize, Vec<String>)>) {
        let start = self
            .prose
            .iter()
            .position(|(_, l)| l.trim_start().starts_with(header))
            .unwrap_or_else(|| panic!("the guide has no table starting with {header:?}"));
        let cells = |line: &str| -> Vec<String> {
            let line = line.trim().trim_start_matches('|').trim_end_matches('|');
            line.split('|').map(|c| c.trim().to_string()).collect()
        };
        let columns = cells(&self.prose[start].1);
        let mut rows = Vec::new();
        for (number, line) in self.prose[start + 2..].iter() {
            if !line.trim_start().starts_with('|') {
                break;
            }
            let row = cells(line);
            assert_eq!(
                row.len(),
                columns.len(),
                "line {number}: the row has {} cells, the header {}",
                row.len(),
                columns.len()
            );
            rows.push((*number, row));
        }
        (columns, rows)
    }
}

// ---------------------------------------------------------------------------------------------
// Routes

/// `METHOD /path?query` as named somewhere.
#[derive(Debug, Clone)]
struct Mention {
    line: usize,
    method: String,
    path: String,
    query: Vec<String>,
}

/// Every `METHOD /path` in `text` (line numbers counted from `first_line`).
fn mentions(text: &str, first_line: usize) -> Vec<Mention> {
    let mut found = Vec::new();
    for (offset, line) in text.lines().enumerate() {
        for method in METHODS {
            let pattern = format!("{method} /");
            let mut from = 0;
            while let Some(at) = line[from..].find(&pattern).map(|i| i + from) {
                from = at + pattern.len();
                let before = line[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let rest = &line[at + method.len() + 1..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || "`),;\"'<>[]*".contains(c))
                    .unwrap_or(rest.len());
                let raw = rest[..end].trim_end_matches(['.', ':']);
                let (path, query) = match raw.split_once('?') {
                    Some((path, query)) => (path, query_names(query)),
                    None => (raw, Vec::new()),
                };
                found.push(Mention {
                    line: first_line + offset,
                    method: method.to_string(),
                    path: path.to_string(),
                    query,
                });
            }
        }
    }
    found
}

/// The parameter names of a query string (`a=1&b=2` → `a`, `b`).
fn query_names(query: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split('=').next())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// Path segments with every `{template}` (and shell `$VARIABLE`) reduced to `{}`.
fn segments(path: &str) -> Vec<String> {
    path.trim_end_matches('/')
        .split('/')
        .map(|s| {
            if (s.starts_with('{') && s.ends_with('}')) || s.starts_with('$') {
                "{}".to_string()
            } else {
                s.to_string()
            }
        })
        .collect()
}

/// One operation of the OpenAPI document.
#[derive(Debug, Clone)]
struct Operation {
    method: String,
    path: String,
    op: Value,
}

impl Operation {
    fn all(doc: &Value) -> Vec<Operation> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                if METHODS.contains(&method.to_uppercase().as_str()) {
                    ops.push(Operation {
                        method: method.to_uppercase(),
                        path: path.clone(),
                        op: op.clone(),
                    });
                }
            }
        }
        ops
    }

    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    fn tags(&self) -> Vec<&str> {
        self.op["tags"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    fn params(&self, location: &str) -> BTreeMap<String, bool> {
        self.op["parameters"]
            .as_array()
            .map(|params| {
                params
                    .iter()
                    .filter(|p| p["in"] == location)
                    .map(|p| {
                        (
                            p["name"].as_str().expect("name").to_string(),
                            p["required"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `X-Tenant-Id` is a header parameter (`Some(required)`).
    fn tenant_header(&self) -> Option<bool> {
        self.params("header")
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("X-Tenant-Id"))
            .map(|(_, required)| required)
    }

    /// Whether the operation takes the operator token (`Some(required)`).
    fn operator_token(&self) -> Option<bool> {
        let requirements = self.op["security"].as_array()?;
        let accepts = requirements
            .iter()
            .any(|r| r.get("operator_token").is_some());
        let optional = requirements
            .iter()
            .any(|r| r.as_object().is_some_and(|o| o.is_empty()));
        accepts.then_some(!optional)
    }

    /// Whether `path` (concrete or templated) names this operation's path.
    fn matches_path(&self, path: &str) -> bool {
        let ours = segments(&self.path);
        let theirs = segments(path);
        ours.len() == theirs.len()
            && ours
                .iter()
                .zip(&theirs)
                .all(|(a, b)| a == b || (a == "{}" && !b.is_empty()))
    }

    /// Whether `path` is this operation's path template (up to parameter names).
    fn is_template(&self, path: &str) -> bool {
        segments(&self.path) == segments(path)
    }
}

/// The operation a mention names: the templated path exactly, else a concrete path.
fn resolve<'a>(ops: &'a [Operation], method: &str, path: &str) -> Option<&'a Operation> {
    let same_method = || ops.iter().filter(move |o| o.method == method);
    same_method()
        .find(|o| o.is_template(path))
        .or_else(|| same_method().find(|o| o.matches_path(path)))
}

/// The routes of the reference Core server: `['METHOD', /^\/api\/...$/` in `server.mjs`.
fn core_routes() -> Vec<(String, Vec<String>)> {
    let source = read("examples/core-integration/server.mjs");
    let mut routes = Vec::new();
    for line in source.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("['") else {
            continue;
        };
        let Some((method, rest)) = rest.split_once("', /^") else {
            continue;
        };
        let Some((pattern, _)) = rest.split_once("$/") else {
            continue;
        };
        let path = pattern.replace("\\/", "/").replace("([0-9a-f-]{36})", "{}");
        routes.push((method.to_string(), segments(&path)));
    }
    assert!(
        routes.len() >= 7,
        "could not read the routes of examples/core-integration/server.mjs"
    );
    routes
}

#[test]
fn every_route_the_guide_names_exists() {
    let guide = Guide::load();
    let ops = Operation::all(&openapi());
    let core = core_routes();
    let found = mentions(&guide.text, 1);
    assert!(
        found.len() > 20,
        "found only {} METHOD /path mentions",
        found.len()
    );
    let mut problems = Vec::new();
    for m in &found {
        if m.path.starts_with("/api/") {
            let ours = segments(&m.path);
            if !core
                .iter()
                .any(|(method, path)| *method == m.method && *path == ours)
            {
                problems.push(format!(
                    "line {}: `{} {}` is not a route of examples/core-integration/server.mjs",
                    m.line, m.method, m.path
                ));
            }
            continue;
        }
        match resolve(&ops, &m.method, &m.path) {
            None => problems.push(format!(
                "line {}: `{} {}` is not an operation of the OpenAPI document",
                m.line, m.method, m.path
            )),
            Some(op) => {
                let known = op.params("query");
                for name in &m.query {
                    if !known.contains_key(name) {
                        problems.push(format!(
                            "line {}: `{name}` is not a query parameter of {}",
                            m.line,
                            op.name()
                        ));
                    }
                }
            }
        }
    }
    // And every route Core offers for connectors appears in the guide.
    for (method, path) in core
        .iter()
        .filter(|(_, p)| p.get(1..3) == Some(&["api".into(), "connectors".into()]))
    {
        let named = found
            .iter()
            .any(|m| m.method == *method && segments(&m.path) == *path);
        if !named {
            problems.push(format!(
                "Core's route {method} {} (server.mjs) is not in the guide",
                path.join("/")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_endpoint_table_lists_every_core_operation_with_its_headers_and_query() {
    let guide = Guide::load();
    let ops = Operation::all(&openapi());
    let (columns, rows) = guide.table("| operation |");
    let column = |name: &str| {
        columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("the endpoint table has no {name:?} column"))
    };
    let (operation, auth, query) = (
        column("operation"),
        column("auth and headers"),
        column("query"),
    );
    let mut problems = Vec::new();
    let mut listed = BTreeSet::new();
    for (line, row) in &rows {
        let named = mentions(&row[operation], *line);
        let [m] = named.as_slice() else {
            problems.push(format!(
                "line {line}: the operation cell must name one `METHOD /path`"
            ));
            continue;
        };
        let Some(op) = ops
            .iter()
            .find(|o| o.method == m.method && o.is_template(&m.path))
        else {
            problems.push(format!(
                "line {line}: `{} {}` is not an operation (use its path template)",
                m.method, m.path
            ));
            continue;
        };
        if !listed.insert(op.name()) {
            problems.push(format!("line {line}: {} is listed twice", op.name()));
        }
        let auth_cell = &row[auth];
        let says_token = auth_cell.contains("Authorization");
        match (says_token, op.operator_token()) {
            (true, None) => problems.push(format!(
                "line {line}: {} takes no operator token, the table says `Authorization`",
                op.name()
            )),
            (false, Some(true)) => problems.push(format!(
                "line {line}: {} needs the operator token; name `Authorization`",
                op.name()
            )),
            _ => {}
        }
        let says_tenant = auth_cell.contains("X-Tenant-Id");
        match (says_tenant, op.tenant_header()) {
            (true, None) => problems.push(format!(
                "line {line}: {} has no X-Tenant-Id header, the table names it",
                op.name()
            )),
            (false, Some(true)) => problems.push(format!(
                "line {line}: {} needs X-Tenant-Id; name it",
                op.name()
            )),
            _ => {}
        }
        let named_query: BTreeSet<String> = backticked(&row[query]).into_iter().collect();
        let actual: BTreeSet<String> = op.params("query").into_keys().collect();
        if named_query != actual {
            problems.push(format!(
                "line {line}: the query column of {} says {named_query:?}, the operation has {actual:?}",
                op.name()
            ));
        }
    }
    for op in &ops {
        if op.tags().iter().any(|t| CORE_TAGS.contains(t)) && !listed.contains(&op.name()) {
            problems.push(format!(
                "{} (tagged {:?}) is meant for Core but has no row in the endpoint table",
                op.name(),
                op.tags()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `backticked` words of a cell.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_link_of_the_guide_leads_somewhere() {
    let guide = Guide::load();
    let anchors: BTreeSet<String> = guide
        .prose
        .iter()
        .filter_map(|(_, l)| l.trim_start().strip_prefix('#'))
        .map(|h| anchor(h.trim_start_matches('#')))
        .collect();
    let dir = root().join("docs/integration");
    let mut problems = Vec::new();
    for (line, text) in &guide.prose {
        for piece in text.split("](").skip(1) {
            let target = &piece[..piece.find(')').unwrap_or(piece.len())];
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            if let Some(fragment) = target.strip_prefix('#') {
                if !anchors.contains(fragment) {
                    problems.push(format!(
                        "line {line}: no heading has the anchor #{fragment}"
                    ));
                }
            } else if !dir
                .join(target.split('#').next().unwrap_or(target))
                .exists()
            {
                problems.push(format!("line {line}: {target} does not exist"));
            }
        }
    }
    let readme = read("README.md");
    if !readme.contains("](docs/integration/connectors-service.md)") {
        problems.push("README.md does not link the guide".into());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// curl commands

/// A curl command of a shell block that calls the service.
#[derive(Debug)]
struct Curl {
    line: usize,
    method: String,
    path: String,
    query: Vec<String>,
    headers: Vec<String>,
}

/// The logical lines of a shell script (continuations joined), with their first line number.
fn logical_lines(body: &str, first_line: usize) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut start = first_line;
    for (offset, line) in body.lines().enumerate() {
        if current.is_empty() {
            start = first_line + offset;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                lines.push((start, std::mem::take(&mut current)));
            }
        }
    }
    if !current.is_empty() {
        lines.push((start, current));
    }
    lines
}

/// The quoted or bare word starting at `text` (without its quotes).
fn word(text: &str) -> &str {
    let text = text.trim_start();
    match text.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let rest = &text[1..];
            &rest[..rest.find(q).unwrap_or(rest.len())]
        }
        _ => &text[..text.find(char::is_whitespace).unwrap_or(text.len())],
    }
}

/// Every curl command of `body` that calls `$CONNECTORS_URL`.
fn curls(body: &str, first_line: usize) -> Vec<Curl> {
    let mut found = Vec::new();
    for (line, text) in logical_lines(body, first_line) {
        for command in text.split("curl ").skip(1) {
            let Some(at) = command.find("$CONNECTORS_URL") else {
                continue;
            };
            let target = &command[at + "$CONNECTORS_URL".len()..];
            let end = target
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .unwrap_or(target.len());
            let (path, mut query) = match target[..end].split_once('?') {
                Some((path, query)) => (path.to_string(), query_names(query)),
                None => (target[..end].to_string(), Vec::new()),
            };
            // curl's default, and what `-G` asks for.
            let mut method = "GET".to_string();
            let mut headers = Vec::new();
            let mut rest = command;
            while let Some(i) = rest.find(" -") {
                rest = &rest[i + 1..];
                if let Some(after) = rest.strip_prefix("-X ") {
                    method = word(after).to_string();
                } else if let Some(after) = rest.strip_prefix("-H ") {
                    let header = word(after);
                    if let Some((name, _)) = header.split_once(':') {
                        headers.push(name.trim().to_ascii_lowercase());
                    }
                } else if let Some(after) = rest.strip_prefix("-data-urlencode ") {
                    if let Some((name, _)) = word(after).split_once('=') {
                        query.push(name.to_string());
                    }
                }
            }
            found.push(Curl {
                line,
                method,
                path,
                query,
                headers,
            });
        }
    }
    found
}

#[test]
fn every_curl_command_of_the_guide_sends_what_its_operation_takes() {
    let guide = Guide::load();
    let ops = Operation::all(&openapi());
    let mut problems = Vec::new();
    let mut seen = 0;
    for block in guide.blocks.iter().filter(|b| b.lang == "sh") {
        for curl in curls(&block.body, block.line + 1) {
            seen += 1;
            let Some(op) = resolve(&ops, &curl.method, &curl.path) else {
                problems.push(format!(
                    "line {}: curl calls {} {}, which is not an operation",
                    curl.line, curl.method, curl.path
                ));
                continue;
            };
            let known = op.params("query");
            for name in &curl.query {
                if !known.contains_key(name) {
                    problems.push(format!(
                        "line {}: `{name}` is not a query parameter of {}",
                        curl.line,
                        op.name()
                    ));
                }
            }
            let sends = |h: &str| curl.headers.iter().any(|x| x == h);
            match (sends("authorization"), op.operator_token()) {
                (true, None) => problems.push(format!(
                    "line {}: {} takes no operator token, the command sends one",
                    curl.line,
                    op.name()
                )),
                (false, Some(true)) => problems.push(format!(
                    "line {}: {} needs `Authorization: Bearer`",
                    curl.line,
                    op.name()
                )),
                _ => {}
            }
            match (sends("x-tenant-id"), op.tenant_header()) {
                (true, None) => problems.push(format!(
                    "line {}: {} has no X-Tenant-Id header, the command sends one",
                    curl.line,
                    op.name()
                )),
                (false, Some(true)) => problems.push(format!(
                    "line {}: {} needs X-Tenant-Id",
                    curl.line,
                    op.name()
                )),
                _ => {}
            }
        }
    }
    assert!(seen >= 10, "found only {seen} curl commands in the guide");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// JSON examples

/// `schema` with `components` beside it, so that `#/components/schemas/...` resolves, and every
/// object schema that lists its properties closed to others: an example with a field the API
/// does not have fails.
fn standalone(schema: &Value, components: &Value) -> Value {
    fn close(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                    map.insert("additionalProperties".into(), Value::Bool(false));
                }
                map.values_mut().for_each(close);
            }
            Value::Array(items) => items.iter_mut().for_each(close),
            _ => {}
        }
    }
    let mut root = json!({ "$schema": "https://json-schema.org/draft/2020-12/schema" });
    let map = root.as_object_mut().expect("object");
    for (key, value) in schema.as_object().expect("a schema object") {
        map.insert(key.clone(), value.clone());
    }
    map.insert("components".into(), components.clone());
    close(&mut root);
    root
}

/// The schema of what an example marker names: `METHOD /path STATUS` or `METHOD /path request`.
fn example_schema(doc: &Value, ops: &[Operation], marker: &str) -> Result<(Value, String), String> {
    let words: Vec<&str> = marker.split_whitespace().collect();
    let [method, path, what, ..] = words.as_slice() else {
        return Err(format!(
            "the marker {marker:?} must read `example: METHOD /path STATUS|request`"
        ));
    };
    let op = ops
        .iter()
        .find(|o| o.method == *method && o.is_template(path))
        .ok_or_else(|| format!("`{method} {path}` is not an operation (use its path template)"))?;
    let content = if *what == "request" {
        &op.op["requestBody"]["content"]
    } else {
        &op.op["responses"][*what]["content"]
    };
    let schema = ["application/json", "application/problem+json"]
        .iter()
        .find_map(|t| content.get(*t).map(|c| c["schema"].clone()))
        .ok_or_else(|| format!("{} documents no JSON body for {what}", op.name()))?;
    Ok((standalone(&schema, &doc["components"]), what.to_string()))
}

#[test]
fn every_json_example_matches_the_schema_of_its_operation() {
    let doc = openapi();
    let ops = Operation::all(&doc);
    let guide = Guide::load();
    let mut problems = Vec::new();
    let mut checked = BTreeSet::new();
    for block in guide.blocks.iter().filter(|b| b.lang == "json") {
        let line = block.line;
        let Some(marker) = block
            .marker
            .as_deref()
            .and_then(|m| m.strip_prefix("example:"))
        else {
            problems.push(format!(
                "line {line}: a JSON block without an `<!-- example: METHOD /path STATUS -->` marker"
            ));
            continue;
        };
        let instance: Value = match serde_json::from_str(&block.body) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("line {line}: the example is not JSON: {e}"));
                continue;
            }
        };
        let (schema, what) = match example_schema(&doc, &ops, marker.trim()) {
            Ok(found) => found,
            Err(e) => {
                problems.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap_or_else(|e| panic!("line {line}: the schema does not compile: {e}"));
        for error in validator.iter_errors(&instance) {
            let at = error.instance_path().to_string();
            problems.push(format!(
                "line {line} ({}): {error} at {}",
                marker.trim(),
                if at.is_empty() { "the top level" } else { &at }
            ));
        }
        if let Some(code) = instance.get("code").and_then(Value::as_str) {
            let status = instance["status"].as_u64().unwrap_or(0);
            if what != status.to_string() {
                problems.push(format!(
                    "line {line}: the problem says status {status}, the marker {what}"
                ));
            }
            match ErrorCode::ALL.iter().find(|c| c.as_str() == code) {
                Some(c) if u64::from(c.status().as_u16()) != status => problems.push(format!(
                    "line {line}: {code} is answered with {}, not {status}",
                    c.status().as_u16()
                )),
                _ => {}
            }
        }
        checked.insert(marker.trim().to_string());
    }
    assert!(
        checked.len() >= 10,
        "only {} JSON examples were checked",
        checked.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn an_example_that_drifts_from_the_schema_is_caught() {
    // The checker itself: a renamed field and a wrong type both fail.
    let doc = openapi();
    let ops = Operation::all(&doc);
    let (schema, _) = example_schema(&doc, &ops, "GET /connections/{id} 404").expect("schema");
    let validator = jsonschema::draft202012::options()
        .build(&schema)
        .expect("compiles");
    let good = json!({
        "type": "https://docs.poblysh.com/errors/connection-not-found", "title": "Connection not found",
        "status": 404, "detail": "no such connection", "code": "CONNECTION_NOT_FOUND",
        "message": "no such connection", "trace_id": "abc"
    });
    assert!(validator.is_valid(&good));
    let mut renamed = good.clone();
    renamed["error_code"] = renamed["code"].take();
    renamed.as_object_mut().expect("object").remove("code");
    assert!(!validator.is_valid(&renamed));
    let mut unknown_code = good.clone();
    unknown_code["code"] = json!("CONNECTION_GONE");
    assert!(!validator.is_valid(&unknown_code));
    let mut wrong_type = good;
    wrong_type["status"] = json!("404");
    assert!(!validator.is_valid(&wrong_type));
}

// ---------------------------------------------------------------------------------------------
// Error codes

/// Every error code the guide mentions: backticked SCREAMING_SNAKE words (but not environment
/// variables: `POBLYSH_*`, `CONNECTORS_*`, `CORE_*`), `"code": "..."` in examples and `code=...`
/// in URLs.
fn codes_mentioned(guide: &Guide) -> Vec<(usize, String)> {
    let screaming = |w: &str| {
        w.contains('_')
            && !["POBLYSH_", "CONNECTORS_", "CORE_"]
                .iter()
                .any(|p| w.starts_with(p))
            && w.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && w.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    let mut found = Vec::new();
    for (number, line) in guide.text.lines().enumerate() {
        for w in backticked(line) {
            if screaming(&w) {
                found.push((number + 1, w));
            }
        }
        for prefix in ["\"code\": \"", "code="] {
            for piece in line.split(prefix).skip(1) {
                let end = piece
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(piece.len());
                if end > 0 {
                    found.push((number + 1, piece[..end].to_string()));
                }
            }
        }
    }
    found
}

#[test]
fn the_guide_knows_every_error_code_and_no_other() {
    let guide = Guide::load();
    let known: BTreeMap<&str, u16> = ErrorCode::ALL
        .iter()
        .map(|c| (c.as_str(), c.status().as_u16()))
        .collect();
    let mut problems = Vec::new();
    let mentioned = codes_mentioned(&guide);
    for (line, code) in &mentioned {
        if !known.contains_key(code.as_str()) {
            problems.push(format!(
                "line {line}: `{code}` is not an error code of the service"
            ));
        }
    }
    let (columns, rows) = guide.table("| status | code |");
    assert_eq!(
        &columns[..2],
        ["status", "code"],
        "the error table starts with status and code"
    );
    assert!(
        columns.len() >= 4,
        "the error table says when and what to do"
    );
    let mut listed = BTreeSet::new();
    for (line, row) in &rows {
        let code = row[1].trim_matches('`');
        let Some(status) = known.get(code) else {
            problems.push(format!("line {line}: `{code}` is not an error code"));
            continue;
        };
        if row[0] != status.to_string() {
            problems.push(format!(
                "line {line}: {code} is answered with {status}, the table says {}",
                row[0]
            ));
        }
        if row[3].len() < 10 {
            problems.push(format!("line {line}: say what a caller does about {code}"));
        }
        if !listed.insert(code.to_string()) {
            problems.push(format!("line {line}: {code} is listed twice"));
        }
    }
    for code in known.keys() {
        if !listed.contains(*code) {
            problems.push(format!(
                "the error table has no row for {code} (ErrorCode::ALL)"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The shape of the guide, its frontend section, its webhook table and its Core client

#[test]
fn the_guide_starts_on_one_screen_and_stays_short() {
    let guide = Guide::load();
    let lines = guide.text.lines().count();
    assert!(
        lines <= MAX_LINES,
        "the guide has {lines} lines, at most {MAX_LINES}: move detail to the reference docs"
    );
    let headings: Vec<&str> = guide
        .prose
        .iter()
        .filter_map(|(_, l)| l.strip_prefix("## "))
        .collect();
    assert_eq!(
        headings.first(),
        Some(&"Start here"),
        "the guide opens with `## Start here`"
    );
    for needed in ["Recommendations", "For frontend engineers"] {
        assert!(
            headings.contains(&needed),
            "the guide has no `## {needed}` section: {headings:?}"
        );
    }
    // The start screen: the quickstart command and a sequence diagram of each callback pattern,
    // before the first `##` after it.
    let start = guide
        .prose
        .iter()
        .find(|(_, l)| l.starts_with("## ") && *l != "## Start here")
        .map(|(n, _)| *n)
        .expect("a section after Start here");
    let diagrams = guide
        .blocks
        .iter()
        .filter(|b| b.line < start && b.lang == "mermaid" && b.body.contains("sequenceDiagram"))
        .count();
    assert_eq!(
        diagrams, 2,
        "Start here has a sequence diagram per callback pattern"
    );
    assert!(
        guide.blocks.iter().any(|b| b.line < start
            && b.lang == "sh"
            && b.body
                .contains("npm start --prefix examples/core-integration")),
        "Start here has the one-command quickstart"
    );
}

/// The prose of the section headed `## {heading}`, up to the next `## `.
fn section(guide: &Guide, heading: &str) -> String {
    let title = format!("## {heading}");
    guide
        .prose
        .iter()
        .skip_while(|(_, l)| *l != title)
        .skip(1)
        .take_while(|(_, l)| !l.starts_with("## "))
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_recommendations_pick_a_callback_pattern_push_or_poll_and_say_what_return_to_must_be() {
    let guide = Guide::load();
    let advice = section(&guide, "Recommendations");
    for (needed, why) in [
        ("Pattern A in production", "which callback pattern to use"),
        (
            "cookie",
            "how a connect is bound to the browser in pattern A",
        ),
        (
            "binding",
            "how a connect is bound to the browser in pattern B",
        ),
        ("`return_to`", "what return_to must be"),
        (
            "POBLYSH_ALLOWED_RETURN_URLS",
            "where return_to's allowed origins come from",
        ),
        ("POST /endpoints", "how Core receives events by push"),
        ("GET /signals", "how Core polls"),
    ] {
        assert!(
            advice.contains(needed),
            "`## Recommendations` does not say {why} (no {needed:?})"
        );
    }
    let cadence = ["every minute", "every 15 minutes"];
    assert!(
        cadence.iter().all(|c| advice.contains(c)),
        "`## Recommendations` gives no polling cadence ({cadence:?})"
    );
}

#[test]
fn the_frontend_section_says_what_to_show_for_every_connection_status() {
    let guide = Guide::load();
    let statuses: BTreeSet<String> = openapi()["components"]["schemas"]["ConnectionStatus"]["enum"]
        .as_array()
        .expect("ConnectionStatus is an enum")
        .iter()
        .map(|v| v.as_str().expect("a string").to_string())
        .collect();
    assert!(statuses.len() >= 4, "{statuses:?}");
    let (columns, rows) = guide.table("| connection status |");
    assert_eq!(
        columns,
        ["connection status", "sync state", "what to show", "buttons"]
    );
    let mut problems = Vec::new();
    let mut shown = BTreeSet::new();
    for (line, row) in &rows {
        let status = row[0].trim_matches('`');
        if !statuses.contains(status) {
            problems.push(format!(
                "line {line}: `{status}` is not a connection status"
            ));
        }
        if row[2].len() < 10 || row[3].is_empty() {
            problems.push(format!("line {line}: say what to show and which button"));
        }
        shown.insert(status.to_string());
    }
    for status in statuses.difference(&shown) {
        problems.push(format!("the frontend table has no row for `{status}`"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every code the connect flow can send a browser back with (`status=error&code=...`): each way
/// it fails, mapped to a code as the HTTP edge maps it.
fn callback_codes() -> BTreeSet<&'static str> {
    // Every variant is named: a new way to fail does not compile until it is listed below.
    fn listed(failure: &FlowError) {
        match failure {
            FlowError::UnknownProvider(_)
            | FlowError::NotConfigured(_)
            | FlowError::Invalid(_)
            | FlowError::StateInvalid(_)
            | FlowError::Denied { .. }
            | FlowError::Provider { .. }
            | FlowError::Store(_)
            | FlowError::Internal(_) => {}
        }
    }
    let failures = vec![
        FlowError::UnknownProvider("myspace".into()),
        FlowError::NotConfigured("github"),
        FlowError::invalid("state", "is required"),
        FlowError::state_invalid("unknown"),
        FlowError::Denied {
            error: "access_denied".into(),
            description: None,
        },
        FlowError::Provider {
            provider: "github".into(),
            source: ProviderCallError::Unavailable("down".into()),
        },
        FlowError::Store(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
        FlowError::Store(StoreError::Conflict {
            constraint: "connections".into(),
        }),
        FlowError::Internal(anyhow::anyhow!("the vault failed")),
    ];
    failures
        .into_iter()
        .map(|failure| {
            listed(&failure);
            ApiError::from(failure).code().as_str()
        })
        .collect()
}

#[test]
fn the_frontend_section_has_a_message_for_every_code_the_callback_sends_back() {
    let guide = Guide::load();
    let emitted = callback_codes();
    assert!(emitted.contains("OAUTH_STATE_INVALID") && emitted.contains("OAUTH_DENIED"));
    let (columns, rows) = guide.table("| callback code |");
    assert_eq!(columns[1], "what to show the user");
    let mut problems = Vec::new();
    let mut listed = BTreeSet::new();
    for (line, row) in &rows {
        let code = row[0].trim_matches('`');
        if !emitted.contains(code) {
            problems.push(format!(
                "line {line}: the callback never sends the browser back with `{code}`"
            ));
        }
        if row[1].len() < 10 {
            problems.push(format!("line {line}: say what the user sees for {code}"));
        }
        if !listed.insert(code.to_string()) {
            problems.push(format!("line {line}: {code} is listed twice"));
        }
    }
    for code in &emitted {
        if !listed.contains(*code) {
            problems.push(format!(
                "the callback table has no row for {code}, which the connect flow can send back"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_webhook_table_claims_what_each_provider_does_and_every_provider_guide_is_linked() {
    let guide = Guide::load();
    let (columns, rows) = guide.table("| provider | by webhook |");
    assert_eq!(columns.len(), 3, "{columns:?}");
    let mut problems = Vec::new();
    let mut listed = BTreeSet::new();
    for (line, row) in &rows {
        let slug = row[0].trim_matches('`');
        let Some(d) = connectors::providers::descriptors()
            .into_iter()
            .find(|d| d.slug == slug)
        else {
            problems.push(format!("line {line}: `{slug}` is not a provider"));
            continue;
        };
        let says = match row[1].as_str() {
            "yes" => true,
            "no" => false,
            other => {
                problems.push(format!(
                    "line {line}: `by webhook` is yes or no, not {other:?}"
                ));
                continue;
            }
        };
        if says != d.webhooks {
            problems.push(format!(
                "line {line}: {slug} says by webhook {:?}, GET /providers answers webhooks: {}",
                row[1], d.webhooks
            ));
        }
        listed.insert(slug.to_string());
    }
    for d in connectors::providers::descriptors() {
        if !listed.contains(d.slug) {
            problems.push(format!("the webhook table has no row for {}", d.slug));
        }
    }
    let dir = root().join("docs/providers");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut guides = 0;
    for entry in entries {
        let name = entry.expect("a directory entry").file_name();
        let name = name.to_string_lossy();
        if !name.ends_with(".md") || name == "adding-a-provider.md" {
            continue;
        }
        guides += 1;
        if !guide.text.contains(&format!("](../providers/{name}")) {
            problems.push(format!("the guide does not link docs/providers/{name}"));
        }
    }
    assert!(guides >= 6, "found only {guides} provider guides");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The lines of `server.mjs` between the client markers.
fn core_client() -> String {
    let source = read("examples/core-integration/server.mjs");
    let lines: Vec<&str> = source.lines().collect();
    let at = |marker: &str| {
        let found: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.trim() == marker)
            .map(|(i, _)| i)
            .collect();
        match found.as_slice() {
            [one] => *one,
            _ => panic!("server.mjs must hold `{marker}` once, on a line of its own"),
        }
    };
    let (begin, end) = (at(CLIENT_BEGIN), at(CLIENT_END));
    assert!(begin < end, "{CLIENT_BEGIN} comes before {CLIENT_END}");
    let mut client = lines[begin + 1..end].join("\n");
    client.push('\n');
    client
}

#[test]
fn the_guide_quotes_the_reference_core_client_exactly() {
    let client = core_client();
    let length = client.lines().count();
    assert!(
        (20..=30).contains(&length),
        "the quoted client is {length} lines; keep it to 20-30"
    );
    for needed in [
        "Authorization",
        "X-Tenant-Id",
        "retry-after",
        "429",
        "503",
        "code",
    ] {
        assert!(
            client.contains(needed),
            "the quoted client does not show {needed:?}"
        );
    }
    let guide = Guide::load();
    let quoted: Vec<&Block> = guide.blocks.iter().filter(|b| b.lang == "js").collect();
    let [block] = quoted.as_slice() else {
        panic!(
            "the guide must hold one ```js block, the Core client; it has {}",
            quoted.len()
        );
    };
    if block.body != client {
        let differ = block
            .body
            .lines()
            .zip(client.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "in length".to_string(),
                |i| format!("at its line {}", i + 1),
            );
        panic!(
            "line {}: the guide's Core client differs from server.mjs between the \
             `guide:core-client` markers {differ}; paste it again",
            block.line
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The walkthrough, end to end

fn require_tool(program: &str, args: &[&str], why: &str) {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "`{program}` is needed {why}, and it is not on PATH");
}

#[tokio::test]
async fn the_guide_walkthrough_connects_syncs_and_reads_signals_against_a_fresh_service() {
    for tool in ["bash", "curl", "jq"] {
        require_tool(tool, &["--version"], "to run the guide's walkthrough");
    }
    let guide = Guide::load();
    let steps: Vec<&Block> = guide
        .blocks
        .iter()
        .filter(|b| b.marker.as_deref() == Some("walkthrough"))
        .collect();
    assert!(
        steps.len() >= 6,
        "the guide has {} walkthrough blocks",
        steps.len()
    );
    let mut script = String::from("set -euo pipefail\n");
    for step in &steps {
        assert_eq!(
            step.lang, "sh",
            "line {}: walkthrough blocks are sh",
            step.line
        );
        script.push_str(&format!(
            "echo '### walkthrough step at line {}'\n",
            step.line
        ));
        script.push_str(&step.body);
    }

    let app = TestApp::spawn_with(&[
        ("POBLYSH_ROLES", "api,worker"),
        ("POBLYSH_ALLOWED_RETURN_URLS", &format!("{CORE_URL}/")),
        (
            "POBLYSH_ALLOWED_REDIRECT_URIS",
            &format!("{CORE_URL}/connectors/callback/sandbox"),
        ),
    ])
    .await;
    let t = tenant();
    let mut command = Command::new("timeout");
    command
        .args(["120", "bash", "-c", &script])
        .env("CONNECTORS_URL", &app.base)
        .env("CONNECTORS_TOKEN", TOKEN)
        .env("TENANT", t.to_string())
        .env("CORE_URL", CORE_URL);
    // The service runs on this test's runtime: wait for bash off it.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("joined")
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the walkthrough failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains(": succeeded"),
        "the sync job did not succeed:\n{stdout}"
    );

    // What the walkthrough left: one sandbox connection, disconnected at the end, and signals.
    let (status, list) = app.get_json(t, "/connections?provider=sandbox").await;
    assert_eq!(status, 200, "{list}");
    let connections = list["connections"].as_array().expect("connections");
    assert_eq!(connections.len(), 1, "{list}");
    assert_eq!(connections[0]["status"], "revoked", "{list}");
    let id = connections[0]["id"].as_str().expect("id");
    let (status, signals) = app
        .get_json(t, &format!("/signals?connection_id={id}"))
        .await;
    assert_eq!(status, 200, "{signals}");
    let signals = signals["signals"].as_array().expect("signals");
    assert!(!signals.is_empty(), "no signals after the walkthrough");
    assert!(signals.iter().all(|s| s["provider"] == "sandbox"));
    assert!(
        stdout.contains(&format!(
            "{CORE_URL}/settings/connectors?status=connected&connection_id={id}"
        )),
        "the callback did not send the browser back to return_to:\n{stdout}"
    );
}

// ---------------------------------------------------------------------------------------------
// The reference integration in headless Chromium

#[tokio::test]
async fn the_reference_integration_connects_and_shows_signals_in_headless_chromium() {
    let example = root().join("examples/core-integration");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).is_file(),
        "{chromium} is missing: the reference integration is tested in Debian's Chromium \
         (apt-get install -y chromium), or set CHROMIUM to a Chromium binary"
    );
    assert!(
        example
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "{} is missing: install it with `npm ci --prefix examples/core-integration` \
         (playwright-core; no browser is downloaded)",
        example.join("node_modules").display()
    );
    require_tool(
        "node",
        &["--version"],
        "(Node.js 20 or later) to run the reference integration",
    );

    let database = match std::env::var("POBLYSH_TEST_DATABASE_URL") {
        Ok(admin) if !admin.is_empty() => Some(TestDatabase::postgres(&admin).await),
        _ => None,
    };
    let screenshot = root().join("target/e2e/core-integration.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut command = Command::new("timeout");
    command
        .args(["240", "node"])
        .arg(example.join("e2e.mjs"))
        .current_dir(root())
        .env("CONNECTORS_BIN", env!("CARGO_BIN_EXE_connectors"))
        .env("CHROMIUM", &chromium)
        .env("E2E_SCREENSHOT", &screenshot);
    if let Some(db) = &database {
        command.env("CONNECTORS_DATABASE_URL", &db.url);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("joined")
        .expect("node runs");
    drop(database);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    assert!(stdout.contains("e2e: passed"), "{stdout}");
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
}

#[tokio::test]
async fn the_guide_examples_use_the_tenant_header_the_service_checks() {
    // The guide tells Core that another tenant's ids answer 404 CONNECTION_NOT_FOUND: true.
    let app = TestApp::spawn().await;
    let owner = tenant();
    let connection = app.connection(owner, "sandbox").await;
    let (status, body) = json(
        app.get(tenant(), &format!("/connections/{}", connection.id))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "CONNECTION_NOT_FOUND");
}
