//! The OpenSpec specs (`openspec/`) say which tests prove each requirement, on a line
//! `**Proven by**: `tests/it/<file>.rs::<test name>`, ...`. Every test named there must exist
//! as a test of this suite, so a spec cannot keep citing a test that was renamed or removed, and
//! every requirement of a capability must name one. (`openspec validate --all --strict`, run by
//! `scripts/test`, checks the specs' format.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Requirements written before the tests that will prove them: `(capability, requirement)`.
/// Each entry goes once its requirement names its tests.
const AWAITING_TESTS: &[(&str, &str)] = &[];

/// The ten capabilities the service's specs describe.
const CAPABILITIES: [&str; 10] = [
    "api-core-and-errors",
    "connect",
    "connections",
    "signals",
    "jobs",
    "webhooks",
    "sync",
    "push",
    "security",
    "integration-guide",
];

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.md` file under `dir`, sorted.
fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "md") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A test a spec names: `tests/it/<file>.rs::<name>`, split at `::`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct TestRef {
    file: String,
    name: String,
}

/// The test references in `text`: backticked `tests/...rs::name` spans (a file named alone is
/// not one).
fn test_refs(text: &str) -> Vec<TestRef> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.starts_with("tests/"))
        .filter_map(|span| span.split_once(".rs::"))
        .map(|(file, name)| TestRef {
            file: format!("{file}.rs"),
            name: name.to_string(),
        })
        .collect()
}

/// Whether `source` declares a test function `name` that runs: `#[test]` or `#[tokio::test]`
/// among the attributes right above it, and no `#[ignore]`.
fn declares_test(source: &str, name: &str) -> bool {
    let lines: Vec<&str> = source.lines().collect();
    lines.iter().enumerate().any(|(i, line)| {
        let line = line.trim_start();
        let declared = [format!("fn {name}("), format!("async fn {name}(")]
            .iter()
            .any(|head| line.starts_with(head.as_str()));
        if !declared {
            return false;
        }
        let attributes: Vec<&str> = lines[..i]
            .iter()
            .rev()
            .map(|l| l.trim_start())
            .take_while(|l| l.starts_with("#[") || l.starts_with("//"))
            .filter(|l| l.starts_with("#["))
            .collect();
        attributes
            .iter()
            .any(|a| *a == "#[test]" || a.starts_with("#[tokio::test"))
            && !attributes.iter().any(|a| a.starts_with("#[ignore"))
    })
}

/// Whether the test file `file` (`tests/it/...rs`) is a module the suite compiles: declared
/// with `mod` in `main.rs` for a top-level file, else in its parent module's file.
fn compiled(file: &str) -> bool {
    let path = Path::new(file);
    let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
        return false;
    };
    let Some(dir) = path.parent() else {
        return false;
    };
    let parents: Vec<PathBuf> = if dir == Path::new("tests/it") {
        vec![dir.join("main.rs")]
    } else {
        vec![dir.with_extension("rs"), dir.join("mod.rs")]
    };
    let declaration = format!("mod {stem};");
    parents.iter().any(|parent| {
        std::fs::read_to_string(repository().join(parent)).is_ok_and(|source| {
            source
                .lines()
                .any(|l| l.trim_start().trim_start_matches("pub ") == declaration)
        })
    })
}

/// The requirements of a spec: each `### Requirement:` heading with the text up to the next one.
fn requirements(spec: &str) -> Vec<(String, String)> {
    spec.split("\n### Requirement: ")
        .skip(1)
        .map(|block| {
            let (heading, body) = block.split_once('\n').unwrap_or((block, ""));
            let body = body.split("\n## ").next().unwrap_or_default();
            (heading.trim().to_string(), body.to_string())
        })
        .collect()
}

fn spec(capability: &str) -> String {
    let path = repository().join(format!("openspec/specs/{capability}/spec.md"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_test_a_spec_names_exists_and_runs() {
    let mut problems = Vec::new();
    let mut named = BTreeSet::new();
    for path in markdown_files(&repository().join("openspec")) {
        let text = std::fs::read_to_string(&path).expect("a spec is text");
        for reference in test_refs(&text) {
            named.insert(reference.clone());
            let origin = path.strip_prefix(repository()).unwrap_or(&path).display();
            let TestRef { file, name } = &reference;
            match std::fs::read_to_string(repository().join(file)) {
                Err(_) => problems.push(format!("{origin}: {file} does not exist")),
                Ok(source) if !declares_test(&source, name) => {
                    problems.push(format!("{origin}: {file} has no test `{name}`"))
                }
                Ok(_) if !compiled(file) => {
                    problems.push(format!("{origin}: {file} is not a module of the suite"))
                }
                Ok(_) => {}
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The specs cite the suite broadly; an empty or truncated reading would find few.
    assert!(named.len() > 150, "only {} tests named", named.len());
}

#[test]
fn every_requirement_names_the_tests_that_prove_it() {
    let mut problems = Vec::new();
    let mut awaiting = BTreeSet::new();
    for capability in CAPABILITIES {
        let requirements = requirements(&spec(capability));
        assert!(!requirements.is_empty(), "{capability} has no requirement");
        for (name, body) in requirements {
            let proven = body
                .lines()
                .any(|l| l.starts_with("**Proven by**:") && !test_refs(l).is_empty());
            let exempt = AWAITING_TESTS.contains(&(capability, name.as_str()));
            if exempt {
                awaiting.insert((capability, name.clone()));
            }
            match (proven, exempt) {
                (false, false) => problems.push(format!(
                    "{capability}: \"{name}\" has no `**Proven by**:` line naming a test"
                )),
                (true, true) => problems.push(format!(
                    "{capability}: \"{name}\" names its tests now; drop it from AWAITING_TESTS"
                )),
                _ => {}
            }
        }
    }
    for (capability, name) in AWAITING_TESTS {
        if !awaiting.contains(&(*capability, name.to_string())) {
            problems.push(format!(
                "AWAITING_TESTS lists \"{name}\", which {capability} does not have"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checks_catch_a_missing_test_and_an_unproven_requirement() {
    let source = "
#[tokio::test]
async fn real() {}

#[test]
#[ignore]
fn skipped() {}

fn helper() {}
";
    assert!(declares_test(source, "real"));
    assert!(
        !declares_test(source, "skipped"),
        "an ignored test proves nothing"
    );
    assert!(!declares_test(source, "helper"), "a helper is not a test");
    assert!(!declares_test(source, "gone"));
    assert!(compiled("tests/it/auth.rs"));
    assert!(compiled("tests/it/github/pushes.rs"));
    assert!(!compiled("tests/it/not_a_module.rs"));

    let spec = "# x

## Requirements

### Requirement: A
It SHALL.

**Proven by**: `tests/it/auth.rs::a_missing_tenant_header_is_named`, `tests/it/guide.rs`

#### Scenario: s
- **WHEN** w
- **THEN** t

### Requirement: B
It MUST.

#### Scenario: s
- **WHEN** w
- **THEN** t
";
    let found = requirements(spec);
    assert_eq!(found.len(), 2);
    assert_eq!(
        test_refs(&found[0].1),
        [TestRef {
            file: "tests/it/auth.rs".into(),
            name: "a_missing_tenant_header_is_named".into()
        }]
    );
    assert!(test_refs(&found[1].1).is_empty());
}
