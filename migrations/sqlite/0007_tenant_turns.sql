-- Claims take turns between tenants (store::shared::turns): each turn finds the next tenant,
-- in tenant-id order, that has work ready, and then that tenant's oldest work. These partial
-- indexes hold only the work waiting to be claimed, ordered for both steps, so a turn costs
-- one index probe per tenant visited however much work the busiest tenant has queued.
CREATE INDEX sync_jobs_queued_by_tenant ON sync_jobs (tenant_id, scheduled_at)
    WHERE status = 'queued';
CREATE INDEX webhook_events_pending_by_tenant ON webhook_events (tenant_id, next_attempt_at)
    WHERE status = 'pending';
