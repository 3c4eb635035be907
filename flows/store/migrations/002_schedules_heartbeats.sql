-- Schedules: a connector may carry a cron expression (UTC); `cai deploy` turns each into a Prefect
-- schedule on the deployment with connector_id bound. NULL or empty: run on demand only.
ALTER TABLE cai_connectors ADD COLUMN IF NOT EXISTS schedule VARCHAR(255);

-- Heartbeats: a running flow touches its run every CAI_HEARTBEAT_SECONDS; a `started` run whose
-- heartbeat is older than CAI_HEARTBEAT_STALE_SECONDS belonged to a worker that died (kill -9, OOM)
-- and is closed as `failed` by the sweep (at the start of every flow run and in `cai doctor`).
ALTER TABLE cai_connector_runs ADD COLUMN IF NOT EXISTS heartbeat_at TIMESTAMP;

CREATE INDEX IF NOT EXISTS cai_connector_runs_started ON cai_connector_runs (heartbeat_at) WHERE status = 'started';
