DELETE FROM audit_log WHERE NOT EXISTS (SELECT 1 FROM apps WHERE apps.id = audit_log.app_id);
ALTER TABLE audit_log
    ADD CONSTRAINT audit_log_app_id_fkey FOREIGN KEY (app_id) REFERENCES apps (id) ON DELETE CASCADE;
