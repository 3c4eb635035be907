-- The delivered-files ledger of copy transfers: one row per source file a connector's pipeline copied,
-- verified, to its destination, with the version (size, modification time) it copied. Every worker
-- reads it from here, the one database they all share: a copy connector's next run sends nothing twice
-- on whichever machine or pod it lands. `pipeline_name` is the pipeline's identity (config store,
-- connector, source and destination kinds and locations): pointing a connector elsewhere starts afresh.
CREATE TABLE IF NOT EXISTS cai_delivered_files (
    pipeline_name VARCHAR(255) NOT NULL,
    connector_id INTEGER NOT NULL,
    file_url TEXT NOT NULL,
    version JSONB NOT NULL,
    destination_url TEXT,
    sha256 VARCHAR(64),
    delivered_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'),
    PRIMARY KEY (pipeline_name, file_url)
);

CREATE INDEX IF NOT EXISTS cai_delivered_files_connector ON cai_delivered_files (connector_id, delivered_at);
