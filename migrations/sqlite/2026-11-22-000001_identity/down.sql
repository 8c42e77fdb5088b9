DROP TABLE instance_secrets;
DROP TABLE audit_log;
DROP TABLE membership_removals;
DROP TABLE users;
DROP TABLE idp_configs;
DROP TABLE api_keys;
DROP TABLE apps;
