ALTER TABLE policies DROP COLUMN token_access;
ALTER TABLE providers DROP COLUMN api_base_url;
