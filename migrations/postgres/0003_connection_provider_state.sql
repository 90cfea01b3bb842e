-- Provider state per connection: non-secret metadata (shown as account_details) and sealed
-- provider secrets (AES-256-GCM, bound to the row like the tokens).
ALTER TABLE connections ADD COLUMN metadata JSONB NOT NULL DEFAULT '{}';
ALTER TABLE connections ADD COLUMN secrets_sealed BYTEA;
