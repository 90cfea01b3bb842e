-- Tenant erasure deletes a tenant's deliveries through its events (`push_deliveries_by_event`
-- beside `push_events_by_tenant`; a delivery's tenant is its event's), so nothing reads an
-- index on `push_deliveries.tenant_id`, and every delivery written paid an entry in it.
DROP INDEX IF EXISTS push_deliveries_by_tenant;
