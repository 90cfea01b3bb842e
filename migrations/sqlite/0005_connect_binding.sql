-- A connect in the service-callback pattern passes once through the service's own authorize
-- hop, which binds it to the browser (a cookie); `opened_at` records that pass so the hop URL
-- cannot bind a second browser.
ALTER TABLE oauth_states ADD COLUMN opened_at INTEGER;
