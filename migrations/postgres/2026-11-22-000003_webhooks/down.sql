DROP TABLE idp_webhooks;
