DROP TABLE webhook_events;
DROP TABLE revocation_outbox;
DROP TABLE connect_states;
DROP TABLE credentials;
DROP TABLE grants;
DROP TABLE policies;
DROP TABLE providers;
