//! The crate's floors: a module folder may use only the folders below it, so the engine never
//! depends on HTTP and there are no import loops between folders. Read from the source, so a
//! new `use` that breaks a floor fails here with the file that has it.

use std::collections::BTreeMap;
use std::path::Path;

/// Each top-level module and the modules it may use. Order: lower floors first.
const ALLOWED: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("crypto", &["domain"]),
    ("connector", &["domain", "crypto"]),
    ("providers", &["domain", "crypto", "connector"]),
    ("config", &["domain", "crypto", "connector", "providers"]),
    ("store", &["domain"]),
    ("telemetry", &["config"]),
    ("services", SERVICES),
    ("tokens", TOKENS),
    ("subscriptions", SUBSCRIPTIONS),
    ("oauth", OAUTH),
    ("ingest", INGEST),
    ("keys", &["domain", "crypto", "store"]),
    ("push", PUSH),
];

const PUSH: &[&str] = &[
    "domain",
    "crypto",
    "connector",
    "config",
    "store",
    "services",
];

const SERVICES: &[&str] = &[
    "domain",
    "crypto",
    "connector",
    "providers",
    "config",
    "store",
];
const TOKENS: &[&str] = &[
    "domain",
    "crypto",
    "connector",
    "config",
    "store",
    "services",
];
const SUBSCRIPTIONS: &[&str] = &[
    "domain",
    "crypto",
    "connector",
    "config",
    "store",
    "services",
    "tokens",
];
const OAUTH: &[&str] = &[
    "domain",
    "crypto",
    "connector",
    "config",
    "store",
    "services",
    "tokens",
    "subscriptions",
];
const INGEST: &[&str] = &[
    "domain",
    "crypto",
    "connector",
    "config",
    "store",
    "services",
    "tokens",
    "subscriptions",
    "telemetry",
];

/// The `crate::<module>` paths a file names in code (comments skipped, unit tests kept out).
fn uses(text: &str) -> Vec<String> {
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn engine_modules_use_only_the_floors_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut violations = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_string())
            .expect("a first component");
        let Some(may_use) = allowed.get(top.as_str()) else {
            continue; // api, http, app, cli, main, openapi, lib: the edge, above every floor
        };
        let text = std::fs::read_to_string(&file).expect("readable source");
        for used in uses(&text) {
            if used != top && !may_use.contains(&used.as_str()) {
                violations.push(format!("{} uses crate::{used}", relative.display()));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "modules reach above their floor:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_floors_have_no_loops() {
    // Each module may only use modules listed before it.
    for (i, (module, may_use)) in ALLOWED.iter().enumerate() {
        for used in *may_use {
            let below = ALLOWED[..i].iter().any(|(m, _)| m == used);
            assert!(below, "{module} uses {used}, which is not below it");
        }
    }
}
