-- What `dlt pipeline ... info | trace | schema | load-package` reads, kept where every machine finds it:
-- after each run, the pipeline's state, schemas, last trace and its load packages' descriptions (never
-- the packages' data files) as one gzipped tar. `cai pipeline CONNECTOR_ID ...` unpacks the connector's
-- latest into a scratch folder and runs dlt's own command on it, on any machine with DATABASE_URL.
CREATE TABLE IF NOT EXISTS cai_pipeline_snapshots (
    pipeline_name VARCHAR(255) PRIMARY KEY,
    connector_id INTEGER NOT NULL,
    saved_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    archive BYTEA NOT NULL
);

CREATE INDEX IF NOT EXISTS cai_pipeline_snapshots_connector ON cai_pipeline_snapshots (connector_id, saved_at);
