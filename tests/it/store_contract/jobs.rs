//! The storage contract: jobs.

use super::*;

#[tokio::test]
async fn a_job_reads_back_for_its_tenant_only() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let conn = app.connection(t, "github").await;
    let new = job(&conn, JobStatus::Failed, JobType::Full, 10);

    let inserted = store.insert_job(&new).await?;

    assert_eq!(inserted.id, new.id);
    assert_eq!(inserted.status, JobStatus::Failed);
    assert_eq!(inserted.job_type, JobType::Full);
    assert_eq!((inserted.attempts, inserted.max_attempts), (1, 5));
    assert_eq!(inserted.scheduled_at, new.scheduled_at);
    assert_eq!(inserted.started_at, new.started_at);
    assert_eq!(inserted.finished_at, new.finished_at);
    assert_eq!(inserted.error, new.error);
    assert_eq!(inserted.follow_up, None);
    assert_eq!(
        (inserted.created_at, inserted.updated_at),
        (new.created_at, new.created_at)
    );
    assert_eq!(
        store.get_job(t, new.id).await?,
        Some(inserted),
        "reads back"
    );
    assert_eq!(store.get_job(tenant(), new.id).await?, None);
    Ok(())
}

#[tokio::test]
async fn jobs_list_newest_first_by_keyset_with_every_filter() -> Outcome {
    let app = TestApp::spawn().await;
    let store = app.store();
    let t = tenant();
    let github = app.connection(t, "github").await;
    let slack = app.connection(t, "slack").await;
    let full = app
        .job(job(&github, JobStatus::Succeeded, JobType::Full, 30))
        .await;
    let failed = app
        .job(job(&github, JobStatus::Failed, JobType::Incremental, 20))
        .await;
    let running = app
        .job(job(&github, JobStatus::Running, JobType::Webhook, 10))
        .await;
    let queued = app
        .job(job(&slack, JobStatus::Queued, JobType::Incremental, 5))
        .await;
    let stranger = app.connection(tenant(), "github").await;
    app.job(job(&stranger, JobStatus::Queued, JobType::Full, 1))
        .await;
    let ids = |list: &[Job]| list.iter().map(|j| j.id).collect::<Vec<_>>();
    let list = |filter: JobFilter| {
        let store = store.clone();
        async move { store.list_jobs(t, &filter, first(10)).await }
    };

    let page_one = store.list_jobs(t, &JobFilter::default(), first(2)).await?;
    let last = page_one.last().expect("a full page");
    let page_two = store
        .list_jobs(
            t,
            &JobFilter::default(),
            after(last.created_at, last.id.0, 10),
        )
        .await?;

    assert_eq!(ids(&page_one), vec![queued.id, running.id]);
    assert_eq!(ids(&page_two), vec![failed.id, full.id]);
    let by_status = list(JobFilter {
        status: Some(JobStatus::Failed),
        ..Default::default()
    })
    .await?;
    assert_eq!(ids(&by_status), vec![failed.id]);
    let by_provider = list(JobFilter {
        provider: Some("slack".into()),
        ..Default::default()
    })
    .await?;
    assert_eq!(ids(&by_provider), vec![queued.id]);
    let by_connection = list(JobFilter {
        connection_id: Some(github.id),
        ..Default::default()
    })
    .await?;
    assert_eq!(ids(&by_connection), vec![running.id, failed.id, full.id]);
    let by_type = list(JobFilter {
        job_type: Some(JobType::Incremental),
        ..Default::default()
    })
    .await?;
    assert_eq!(ids(&by_type), vec![queued.id, failed.id]);
    let started = list(JobFilter {
        started_after: failed.started_at,
        ..Default::default()
    })
    .await?;
    assert_eq!(ids(&started), vec![running.id, failed.id], "inclusive");
    let finished = list(JobFilter {
        finished_after: full.finished_at,
        ..Default::default()
    })
    .await?;
    assert_eq!(ids(&finished), vec![failed.id, full.id], "inclusive");
    Ok(())
}
