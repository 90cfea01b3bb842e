//! Pushes by sync from the repository events API
//! (<https://docs.github.com/en/rest/activity/events#list-repository-events>: 100 events a page,
//! 300 and 90 days at most): paged back to the last event read, with a gap reported when
//! GitHub's window ends first, and read in a connection's first sync within its window.

use std::collections::BTreeSet;

use chrono::Duration;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use super::{github_200, kinds_and_keys, pair, rest_issue, second_now, secs, FakeGithub, SyncPage};
use crate::github_rest::example;

type Time = chrono::DateTime<chrono::Utc>;

/// The head commit of push `n` of `octo/app`.
fn head(n: usize) -> String {
    format!("{n:040x}")
}

/// The REST description's `PushEvent` example (`repo-events-items`), as push `n` of `octo/app`
/// created at `at`.
fn push_event(n: usize, at: &Time) -> Value {
    let mut event = example("repo-events-items")[0].clone();
    assert_eq!(event["type"], "PushEvent");
    event["id"] = json!(format!("{}", 30_000_000_000u64 + n as u64));
    event["repo"]["name"] = json!("octo/app");
    event["created_at"] = json!(secs(at));
    event["payload"]["ref"] = json!("refs/heads/main");
    event["payload"]["head"] = json!(head(n));
    event
}

/// Answers `GET /repos/octo/app/git/commits/{sha}` with the description's example
/// (`git-commit-2`) for that commit, authored a minute before `at`.
struct Commits {
    at: Time,
}

impl Respond for Commits {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let sha = request.url.path().rsplit('/').next().unwrap_or_default();
        let mut commit = example("git-commit-2");
        commit["sha"] = json!(sha);
        commit["html_url"] = json!(format!("https://github.com/octo/app/commit/{sha}"));
        commit["author"]["date"] = json!(secs(&(self.at - Duration::minutes(1))));
        github_200(commit, "\"commit\"").respond(request)
    }
}

async fn serve_commits(gh: &FakeGithub, at: Time) {
    Mock::given(method("GET"))
        .and(path_regex(r"^/repos/octo/app/git/commits/[0-9a-f]{40}$"))
        .respond_with(Commits { at })
        .mount(&gh.mock)
        .await;
}

/// Serves `events` (newest first) as GitHub pages them: 100 a page, `Link` to the next, the
/// first page with `ETag` `"ev-new"`.
async fn serve_events(gh: &FakeGithub, events: &[Value]) {
    let pages: Vec<&[Value]> = events.chunks(100).collect();
    for (i, page) in pages.iter().enumerate() {
        let number = i + 1;
        let mut answer = github_200(json!(page), &format!("\"ev-{number}\""));
        if number == 1 {
            answer = github_200(json!(page), "\"ev-new\"");
        }
        if number < pages.len() {
            let next = format!(
                "<{}/repos/octo/app/events?per_page=100&page={}>; rel=\"next\"",
                gh.uri(),
                number + 1
            );
            answer = answer.insert_header("Link", next);
        }
        let mut mock = Mock::given(method("GET"))
            .and(path("/repos/octo/app/events"))
            .and(query_param("per_page", "100"));
        if number > 1 {
            mock = mock.and(query_param("page", number.to_string().as_str()));
        }
        mock.respond_with(answer)
            .with_priority(if number == 1 { 5 } else { 1 })
            .expect(1)
            .mount(&gh.mock)
            .await;
    }
}

/// Every page from `cursor` until the cycle ends.
async fn until_the_cycle_ends(gh: &FakeGithub, cursor: Value) -> Vec<SyncPage> {
    let mut pages = Vec::new();
    let mut cursor = Some(cursor);
    for _ in 0..1000 {
        let page = gh.page(cursor.as_ref()).await.expect("a page");
        let more = page.more;
        cursor = Some(page.cursor.clone());
        pages.push(page);
        if !more {
            return pages;
        }
    }
    panic!("the cycle never ended");
}

fn pushed_keys(pages: &[SyncPage]) -> Vec<(String, String)> {
    pages.iter().flat_map(kinds_and_keys).collect()
}

fn push_key(n: usize) -> (String, String) {
    pair(
        "code_pushed",
        format!("push:1296269:refs/heads/main:{}", head(n)),
    )
}

/// The events requests received, by `page` (none for the first) and whether they carried
/// `If-None-Match`.
async fn events_requests(gh: &FakeGithub) -> Vec<(Option<String>, bool)> {
    let received = gh.mock.received_requests().await.expect("recorded");
    received
        .iter()
        .filter(|r| r.url.path() == "/repos/octo/app/events")
        .map(|r| {
            let page = r
                .url
                .query_pairs()
                .find(|(k, _)| k == "page")
                .map(|(_, v)| v.into_owned());
            (page, r.headers.contains_key("if-none-match"))
        })
        .collect()
}

fn pushes_cursor(floor: &Time, mark: &Time, mark_id: &str) -> Value {
    json!({
        "v": 1, "floor": secs(floor), "since": secs(mark), "phase": "pushes",
        "repos": [{
            "full_name": "octo/app", "events_etag": "\"ev-old\"",
            "pushes": { "at": secs(mark), "ids": [mark_id] }
        }]
    })
}

/// 250 pushes since the last read fill two pages and half of a third, whose other half is
/// older: all three are read (the `ETag` on the first only), every push once, oldest first,
/// and nothing before the mark.
#[tokio::test]
async fn a_busy_repository_is_paged_back_to_the_last_event_read_and_each_push_is_read_once() {
    let gh = FakeGithub::start().await;
    let now = second_now();
    let mark = now - Duration::hours(6);
    // Newest first: pushes 250 (newest) .. 1, the last read (0) at the mark, then older ones.
    let mut events: Vec<Value> = (1..=250)
        .rev()
        .map(|n| push_event(n, &(mark + Duration::seconds(n as i64 * 60))))
        .collect();
    events.extend((0..50).map(|n| push_event(1000 + n, &(mark - Duration::minutes(n as i64)))));
    let mark_id = events[250]["id"].as_str().expect("id").to_string();
    serve_events(&gh, &events).await;
    serve_commits(&gh, now).await;

    let cursor = pushes_cursor(&(now - Duration::days(30)), &mark, &mark_id);
    let pages = until_the_cycle_ends(&gh, cursor).await;

    let expected: Vec<(String, String)> = (1..=250).map(push_key).collect();
    assert_eq!(
        pushed_keys(&pages),
        expected,
        "every push once, oldest first"
    );
    assert_eq!(
        events_requests(&gh).await,
        [
            (None, true),
            (Some("2".to_string()), false),
            (Some("3".to_string()), false)
        ],
        "three pages, the ETag on the first only"
    );
    let last = pages.last().expect("a page");
    assert_eq!(last.cursor["phase"], "events", "the cycle is over");
    let repo = &last.cursor["repos"][0];
    assert_eq!(repo["events_etag"], "\"ev-new\"");
    assert_eq!(
        repo["pushes"],
        json!({ "at": secs(&(mark + Duration::seconds(250 * 60))), "ids": [events[0]["id"]] })
    );
    assert!(
        pages.iter().all(|p| p.metadata.is_none()),
        "no gap: the third page reached the mark"
    );
}

/// When even GitHub's last page (the 300th event) is newer than the mark, the pushes between
/// may be lost: every push listed is still read once, and the gap is kept in the connection's
/// metadata for the operator.
#[tokio::test]
async fn a_window_that_ends_before_the_last_event_read_is_reported_as_a_gap() {
    let gh = FakeGithub::start().await;
    let now = second_now();
    let mark = now - Duration::days(2);
    let oldest = now - Duration::hours(10);
    let events: Vec<Value> = (1..=300)
        .rev()
        .map(|n| push_event(n, &(oldest + Duration::seconds((n as i64 - 1) * 60))))
        .collect();
    serve_events(&gh, &events).await;
    serve_commits(&gh, now).await;

    let cursor = pushes_cursor(&(now - Duration::days(30)), &mark, "1");
    let pages = until_the_cycle_ends(&gh, cursor).await;

    let keys = pushed_keys(&pages);
    assert_eq!(keys.len(), 300);
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), 300, "each once");
    let patches: Vec<&connectors::connector::Metadata> =
        pages.iter().filter_map(|p| p.metadata.as_ref()).collect();
    assert_eq!(patches.len(), 1, "{patches:?}");
    let gap = &patches[0]["pushes_possibly_missed"]["octo/app"];
    assert_eq!(gap["from"], secs(&mark));
    assert_eq!(gap["until"], secs(&oldest));
    assert!(gap["seen_at"].is_string());
}

/// A connection's first sync reads the pushes of the repositories its listing showed, back to
/// the same floor as the rest of its history (30 days), and ends the cycle with them.
#[tokio::test]
async fn the_first_sync_reads_pushes_within_its_window() {
    let gh = FakeGithub::start().await;
    let now = second_now();
    let recent = secs(&(now - Duration::days(1)));
    Mock::given(method("GET"))
        .and(path("/issues"))
        .respond_with(github_200(
            json!([rest_issue(11, "octo/app", 1, &recent, &recent, None, None)]),
            "W/\"issues\"",
        ))
        .mount(&gh.mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/octo/app/releases"))
        .respond_with(github_200(json!([]), "\"releases\""))
        .mount(&gh.mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/octo/app/issues/comments"))
        .respond_with(github_200(json!([]), "\"comments\""))
        .mount(&gh.mock)
        .await;
    let events = [
        push_event(2, &(now - Duration::days(2))),
        push_event(1, &(now - Duration::days(40))),
    ];
    serve_events(&gh, &events).await;
    serve_commits(&gh, now).await;

    let mut pages = Vec::new();
    let mut cursor: Option<Value> = None;
    loop {
        let page = gh.page(cursor.as_ref()).await.expect("a page");
        cursor = Some(page.cursor.clone());
        let more = page.more;
        pages.push(page);
        if !more {
            break;
        }
        assert!(pages.len() < 20, "the first cycle never ended");
    }
    let pushed: Vec<(String, String)> = pushed_keys(&pages)
        .into_iter()
        .filter(|(kind, _)| kind == "code_pushed")
        .collect();
    assert_eq!(pushed, [push_key(2)], "the push of 40 days ago is history");
    let last = pages.last().expect("a page");
    assert_eq!(last.cursor["phase"], "events");
    assert_eq!(
        last.cursor["repos"][0]["pushes"]["at"],
        secs(&(now - Duration::days(2)))
    );
}
