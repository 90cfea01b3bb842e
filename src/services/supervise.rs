//! Keeps a background loop alive: a panic inside a tokio task ends that task for good, so one
//! bad item (an absurd number from a provider, a bug on a rare path) would otherwise stop token
//! refresh, the inbox or the sync engine for every tenant until the process restarts.
//! [`supervise`] runs the loop in a task of its own and starts it again after a panic, after a
//! short pause that grows while it keeps panicking, unless shutdown has begun. A loop that
//! returns normally is not restarted. Aborting the returned handle aborts the loop too.

use std::any::Any;
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::Services;

/// The first pause before a restart.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause before a restart.
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// A run that lasted this long was healthy: the next panic starts the pauses over.
const HEALTHY_RUN: Duration = Duration::from_secs(300);
/// The most of a panic message logged; the message is code's text, not data, but it is cut
/// short so a value formatted into it cannot flood the log.
const MAX_MESSAGE_CHARS: usize = 200;

/// Aborts the task it holds when dropped, so aborting the supervisor stops its loop.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the loop `task()` makes, named `name` in logs and metrics, starting it again after
/// each panic until it returns or shutdown begins.
pub fn supervise<F, Fut>(services: &Services, name: &'static str, task: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let services = services.clone();
    tokio::spawn(async move {
        let mut pause = FIRST_PAUSE;
        loop {
            let started = tokio::time::Instant::now();
            let mut run = AbortOnDrop(tokio::spawn(task()));
            let panic = match (&mut run.0).await {
                Ok(()) => return,
                Err(err) if err.is_panic() => err.into_panic(),
                // Cancelled: someone aborted it on purpose.
                Err(_) => return,
            };
            metrics::counter!("background_task_panics_total", "task" => name).increment(1);
            if started.elapsed() >= HEALTHY_RUN {
                pause = FIRST_PAUSE;
            }
            tracing::error!(
                task = name,
                panic = %panic_message(panic.as_ref()),
                restart_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                "background task panicked; restarting it"
            );
            if services.is_shutting_down() {
                return;
            }
            tokio::time::sleep(pause).await;
            if services.is_shutting_down() {
                return;
            }
            pause = pause.saturating_mul(2).min(MAX_PAUSE);
        }
    })
}

/// The text of a panic payload (`panic!` with a literal or a format), first line, cut short.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)");
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    async fn services() -> (Services, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let source = crate::config::Source::from_pairs([
            ("POBLYSH_PROFILE", "test"),
            ("POBLYSH_DATABASE_URL", url.as_str()),
        ]);
        let config = crate::config::Config::from_source(&source).expect("config");
        let store = crate::store::connect(&url, &crate::store::StoreOptions { max_connections: 1 })
            .await
            .expect("store");
        (Services::new(Arc::new(config), store), dir)
    }

    #[tokio::test]
    async fn a_loop_that_panics_once_is_started_again() {
        let (services, _dir) = services().await;
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let handle = supervise(&services, "test", move || {
            let runs = counted.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("first run fails");
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("restarted and finished")
            .expect("the supervisor itself does not panic");
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn no_restart_once_shutdown_has_begun() {
        let (services, _dir) = services().await;
        services.begin_shutdown();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let handle = supervise(&services, "test", move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { panic!("always") }
        });
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("gave up")
            .expect("the supervisor itself does not panic");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn panic_messages_are_one_short_line() {
        let long = "x".repeat(1000) + "\nsecond line";
        assert_eq!(panic_message(&long).len(), MAX_MESSAGE_CHARS);
        assert_eq!(panic_message(&"boom"), "boom");
        assert_eq!(panic_message(&7_u8), "(a panic without a message)");
    }
}
