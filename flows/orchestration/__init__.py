"""Prefect around the runs: the per-connector run lock, heartbeats, deployment, triggers, the doctor."""
