"""Create or update the Prefect deployment of `run_connector_pipeline` (the same as `cai deploy`).

    PREFECT_API_URL=http://prefect:4200/api DATABASE_URL=postgresql://... python deploy_flow.py

Work pool `default` (process), queue `default`, one cron schedule per connector whose `schedule`
column is set. See `flows/orchestration/deployment.py`.
"""

from flows.orchestration.deployment import deploy

if __name__ == "__main__":
    done = deploy()
    print(f"deployment {done.deployment_id}; schedules: {done.schedules or 'none'}")
