-- The proxy (/v1/proxy/{provider}/...): where a provider's API lives, and whether a policy lets
-- tokens leave Custody at all. Keep in step with migrations/postgres/2026-12-06-000005_proxy.

-- The base URL the proxy calls; NULL when the provider has none (the proxy then refuses).
ALTER TABLE providers ADD COLUMN api_base_url TEXT;

-- 'handout': POST /v1/token hands tokens out; 'proxy_only': only the proxy uses them.
ALTER TABLE policies ADD COLUMN token_access TEXT NOT NULL DEFAULT 'handout'
    CHECK (token_access IN ('handout', 'proxy_only'));
