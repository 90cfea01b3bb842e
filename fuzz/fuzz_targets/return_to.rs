//! `return_to` matching of a connect: whatever text is asked for, what is accepted has the
//! allowed prefix's origin, starts with its path segments as whole segments, carries no
//! credentials, and hides no encoded separator or dot; nothing panics.
#![no_main]

use connectors::fuzzing::allowed_return_to;
use libfuzzer_sys::fuzz_target;
use url::Url;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let allowed = [
        Url::parse("https://core.example.com/connectors").expect("a URL"),
        Url::parse("https://app.example.com/a/b/").expect("a URL"),
    ];
    let under_allowed = format!("https://core.example.com/connectors{raw}");
    for candidate in [raw.as_ref(), under_allowed.as_str()] {
        let Ok(url) = allowed_return_to(candidate, &allowed) else {
            continue;
        };
        assert!(
            url.username().is_empty() && url.password().is_none(),
            "{url}"
        );
        let path = url.path();
        let lower = path.to_ascii_lowercase();
        for hidden in ["%2f", "%5c", "%2e", "\\"] {
            assert!(!lower.contains(hidden), "{url}");
        }
        let segments: Vec<&str> = path.split('/').collect();
        assert!(!segments.contains(&".."), "{url}");
        let origin = url.origin();
        let core = origin == allowed[0].origin()
            && (path == "/connectors" || path.starts_with("/connectors/"));
        let app = origin == allowed[1].origin() && (path == "/a/b" || path.starts_with("/a/b/"));
        assert!(core || app, "{url} is outside every allowed prefix");
    }
});
