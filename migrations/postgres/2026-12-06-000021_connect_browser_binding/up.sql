-- Issue 15 item 2: a connect flow is bound to the browser that opened its connect_url. The
-- SHA-256 (hex) of the random value of that browser's cookie; NULL until the flow is opened.
ALTER TABLE connect_states ADD COLUMN browser_hash TEXT;
