"""Every setting cai reads from the environment, in one typed object (the README's table is checked against it).

`settings()` reads the environment when called, so a process (or a test) that changes a variable
sees it at the next call; nothing else in the product reads `os.environ` for these.

A plain pydantic model validated from `os.environ`, not pydantic-settings' `BaseSettings`: every field
is a flat scalar named by its alias, which is all `BaseSettings` did here. Importing pydantic-settings
(its sources for AWS, Azure, GCP, YAML, TOML and a CLI parser) cost every process without Prefect
(`cai load-csv`, a direct run, a transfer) 0.07-0.1 s and about 1 MB after pydantic and dlt were
loaded; Prefect, where it runs, imports it for itself.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class Settings(BaseModel):
    """cai's environment. Each field's alias is the variable's name."""

    model_config = ConfigDict(extra="ignore")

    database_url: str | None = Field(None, validation_alias="DATABASE_URL", description="the config store (libpq URL)")
    cai_home: str | None = Field(None, validation_alias="CAI_HOME",
                                 description="cai's own files: embedded database, dlt pipelines, demo data")
    pipelines_dir: str | None = Field(None, validation_alias="CAI_PIPELINES_DIR",
                                      description="dlt pipelines directory (state, schemas, traces)")
    minio_endpoint: str | None = Field(None, validation_alias="MINIO_ENDPOINT",
                                       description="fills `endpoint_url` of S3 configs that leave it out")
    minio_access_key: str | None = Field(None, validation_alias="MINIO_ACCESS_KEY",
                                         description="fills `aws_access_key_id` of S3 configs that leave it out")
    minio_secret_key: SecretStr | None = Field(
        None, validation_alias="MINIO_SECRET_KEY",
        description="fills `aws_secret_access_key` of S3 configs that leave it out")
    heartbeat_seconds: float = Field(30.0, gt=0, validation_alias="CAI_HEARTBEAT_SECONDS",
                                     description="how often a running flow touches its run's `heartbeat_at`")
    heartbeat_stale_seconds: float = Field(
        120.0, gt=0, validation_alias="CAI_HEARTBEAT_STALE_SECONDS",
        description="a `started` run silent this long is closed as `failed` by the sweep (at least 3 heartbeats)")
    settle_seconds: float = Field(
        5.0, ge=0, validation_alias="CAI_SETTLE_SECONDS",
        description="how long a folder's file must stay unchanged before it is taken, where its source sets no "
                    "`settle_seconds`")
    worker_stop_seconds: float = Field(
        40.0, ge=0, validation_alias="CAI_WORKER_STOP_SECONDS",
        description="after SIGTERM, how long `cai worker` lets runs in flight finish before it stops them")
    connector_wait_seconds: float = Field(
        3600.0, ge=0, validation_alias="CAI_CONNECTOR_WAIT_SECONDS",
        description="how long a run waits for another run of the same connector to finish")


def settings() -> Settings:
    """The settings as the environment holds them now."""
    return Settings.model_validate(os.environ)


def variables() -> list[str]:
    """Every variable name cai reads."""
    return [str(field.validation_alias) for field in Settings.model_fields.values()]
