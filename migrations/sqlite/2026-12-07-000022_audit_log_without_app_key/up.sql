-- PostgreSQL only (its audit table drops its foreign key to `apps`). SQLite checks the key in
-- process, and dropping it would mean rebuilding the table; the migration exists so that both
-- backends have the same versions.
SELECT 1;
