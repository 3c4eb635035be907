-- The config store and run history, as the spec's Appendix A and the platform's backend define them.
-- IF NOT EXISTS throughout: the backend may have created these tables already; never rename its columns.

CREATE TABLE IF NOT EXISTS ad_lookup_codes (
    id SERIAL PRIMARY KEY,
    lookup_type VARCHAR(100) NOT NULL,
    lookup_code VARCHAR(100) NOT NULL,
    description TEXT
);

CREATE TABLE IF NOT EXISTS cai_defined_sources (
    id SERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    source_type_lookup_code_id INTEGER REFERENCES ad_lookup_codes (id),
    config JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE IF NOT EXISTS cai_defined_destinations (
    id SERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    destination_type_lookup_code_id INTEGER REFERENCES ad_lookup_codes (id),
    config JSONB NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE IF NOT EXISTS cai_connectors (
    id SERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    defined_source_id INTEGER,
    defined_destination_id INTEGER,
    source_config_override JSONB,
    destination_config_override JSONB
);

CREATE TABLE IF NOT EXISTS cai_connector_runs (
    id SERIAL PRIMARY KEY,
    connector_id INTEGER NOT NULL,
    status VARCHAR(50) NOT NULL,
    prefect_flow_run_id VARCHAR(255),
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    rows_ingested INTEGER,
    log_summary TEXT
);

-- Added by this runner: dlt load info (rows per table, files, bytes, step durations) per run.
ALTER TABLE cai_connector_runs ADD COLUMN IF NOT EXISTS metrics JSONB;

CREATE INDEX IF NOT EXISTS cai_connector_runs_connector_started
    ON cai_connector_runs (connector_id, started_at DESC);

-- The lookup codes of every registered kind are seeded by `cai init-db` after the migrations
-- (flows.store.config_store.seed_lookup_codes), so a new kind brings its own code.
