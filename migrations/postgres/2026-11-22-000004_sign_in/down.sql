DROP TABLE wallet_sessions;
DROP TABLE sign_in_states;
DROP TABLE sdk_sessions;
DROP TABLE oidc_clients;
