ALTER TABLE connect_states DROP COLUMN browser_hash;
