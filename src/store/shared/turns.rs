//! Turns between tenants, so that no tenant's backlog starves another's work.
//!
//! Both queues (sync jobs and the webhook inbox) claim in tenant round-robin: an instance
//! keeps the id of the tenant it served last, and its next claim goes to the first tenant
//! after that one, in tenant-id order and wrapping around, that has work ready. A tenant with
//! 5,000 queued syncs and a tenant with one therefore alternate, and the small tenant's job is
//! claimed within one turn of every tenant with ready work, whatever the big one has queued.
//! Inside a tenant, work stays oldest first.
//!
//! Finding "the next tenant with work" is a walk over a partial index of the waiting work
//! ordered by tenant (migration 0007): one index probe per tenant visited, never a scan of the
//! backlog. Instances keep their own turn; each of them alternates between tenants, so together
//! they do too.

use std::sync::Mutex;

use uuid::Uuid;

/// Where one queue's round-robin stands in this process: the tenant served last.
#[derive(Debug, Default)]
pub(crate) struct Turn {
    last: Mutex<Option<Uuid>>,
}

impl Turn {
    /// The tenant served last (`None` before the first claim): the next turn starts after it.
    pub(crate) fn last(&self) -> Option<Uuid> {
        // A poisoned lock only means a panic elsewhere while it was held; the value inside is
        // a plain id and still good.
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `tenant` was served, so the next turn goes to a tenant after it.
    pub(crate) fn served(&self, tenant: Uuid) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(tenant);
    }
}

/// The turns of a store: one for the job queue, one for the inbox.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    pub(crate) jobs: Turn,
    pub(crate) inbox: Turn,
}

/// The tenants to serve this turn, in order: those after `last` first, then, wrapping around,
/// those from the start up to and including `last`, at most `max` in all. `after` lists the
/// ready tenants after a bound (or from the start with `None`), in tenant-id order.
pub(crate) async fn in_turn<F, Fut, E>(
    last: Option<Uuid>,
    max: u32,
    mut after: F,
) -> Result<Vec<Uuid>, E>
where
    F: FnMut(Option<Uuid>, u32) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Uuid>, E>>,
{
    let mut tenants = after(last, max).await?;
    let room = max.saturating_sub(u32::try_from(tenants.len()).unwrap_or(u32::MAX));
    if last.is_some() && room > 0 {
        for tenant in after(None, room).await? {
            if tenants.contains(&tenant) {
                break;
            }
            tenants.push(tenant);
        }
    }
    Ok(tenants)
}

/// How many of its oldest ready items each of `tenants` tenants gets in a batch of `limit`:
/// an equal share, at least one. What the shares leave of the batch goes to the oldest ready
/// items of anyone, so one busy tenant alone still fills whole batches.
pub(crate) fn share(limit: u32, tenants: usize) -> u32 {
    let tenants = u32::try_from(tenants).unwrap_or(u32::MAX).max(1);
    (limit / tenants).max(1)
}

/// The tenants that get a share of a batch of `limit`, and each one's share: none when only
/// one tenant has items ready (its items are the oldest of anyone's anyway).
pub(crate) fn shares(limit: u32, tenants: &[Uuid]) -> (&[Uuid], u32) {
    let tenants: &[Uuid] = if tenants.len() > 1 { tenants } else { &[] };
    (tenants, share(limit, tenants.len()))
}

/// The SQL that lists up to `max` tenants with ready work in `table`, in tenant-id order
/// (after the tenant bound to `after` when `anchored`): a recursive walk in which each step
/// asks the `(tenant_id, ...)` index for the first tenant above the previous one, so it reads
/// one index entry per tenant instead of every waiting row. `ready` is the condition on a
/// row of `table`; the placeholders are each dialect's own. The same text runs on SQLite and
/// PostgreSQL, but for `indexed_by`: SQLite, without statistics, prefers an index on
/// `(status, time)` for `ready` and then sorts every ready row by tenant at each step, so it
/// names the walk's index (`INDEXED BY`, which fails to prepare rather than plan otherwise).
pub(crate) fn walk_tenants(
    table: &str,
    indexed_by: Option<&str>,
    ready: &str,
    anchored: bool,
    max: &str,
    after: &str,
) -> String {
    let anchor = if anchored {
        format!(" AND tenant_id > {after}")
    } else {
        String::new()
    };
    let index = indexed_by.map_or(String::new(), |i| format!(" INDEXED BY {i}"));
    format!(
        "WITH RECURSIVE walk(tenant_id, n) AS ( \
           SELECT (SELECT tenant_id FROM {table}{index} WHERE {ready}{anchor} \
                   ORDER BY tenant_id LIMIT 1), 1 \
           UNION ALL \
           SELECT (SELECT w.tenant_id FROM {table} w{index} WHERE {ready} \
                   AND w.tenant_id > walk.tenant_id ORDER BY w.tenant_id LIMIT 1), walk.n + 1 \
           FROM walk WHERE walk.tenant_id IS NOT NULL AND walk.n < {max}) \
         SELECT tenant_id FROM walk WHERE tenant_id IS NOT NULL"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    /// A fake "ready tenants after a bound" over a fixed, sorted set.
    fn ready(
        set: Vec<Uuid>,
    ) -> impl FnMut(Option<Uuid>, u32) -> std::future::Ready<Result<Vec<Uuid>, ()>> {
        move |after, max| {
            let found = set
                .iter()
                .filter(|t| after.is_none_or(|a| **t > a))
                .take(max as usize)
                .copied()
                .collect();
            std::future::ready(Ok(found))
        }
    }

    #[tokio::test]
    async fn a_turn_starts_after_the_tenant_served_last_and_wraps_around() {
        let set = vec![id(1), id(2), id(3), id(4)];
        let order = in_turn(Some(id(2)), 10, ready(set)).await;
        assert_eq!(order, Ok(vec![id(3), id(4), id(1), id(2)]));
    }

    #[tokio::test]
    async fn a_turn_is_bounded_by_its_maximum() {
        let set = vec![id(1), id(2), id(3), id(4)];
        assert_eq!(
            in_turn(Some(id(3)), 2, ready(set.clone())).await,
            Ok(vec![id(4), id(1)])
        );
        assert_eq!(
            in_turn(None, 3, ready(set)).await,
            Ok(vec![id(1), id(2), id(3)])
        );
    }

    #[tokio::test]
    async fn the_first_turn_starts_from_the_lowest_tenant() {
        let order = in_turn(None, 10, ready(vec![id(5), id(9)])).await;
        assert_eq!(order, Ok(vec![id(5), id(9)]));
    }

    #[tokio::test]
    async fn a_tenant_served_last_that_has_no_more_work_is_not_in_the_turn() {
        let order = in_turn(Some(id(2)), 10, ready(vec![id(1), id(3)])).await;
        assert_eq!(order, Ok(vec![id(3), id(1)]));
    }

    #[test]
    fn shares_divide_the_batch_equally_and_never_fall_to_zero() {
        assert_eq!(share(128, 1), 128);
        assert_eq!(share(128, 2), 64);
        assert_eq!(share(128, 3), 42);
        assert_eq!(share(128, 500), 1);
        assert_eq!(share(128, 0), 128);
    }

    #[test]
    fn a_turn_remembers_the_tenant_served_last() {
        let turn = Turn::default();
        assert_eq!(turn.last(), None);
        turn.served(id(7));
        assert_eq!(turn.last(), Some(id(7)));
    }
}
