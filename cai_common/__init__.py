"""Mechanics shared by sources, destinations and flows: typed config bases, errors, secret masking."""

from cai_common.configuration import BaseConfig, FieldProblem, PostgresCredentials
from cai_common.errors import (
    CaiError,
    ConnectorConfigError,
    ConnectorError,
    ConnectorNotFound,
    ConnectorRunFailed,
    DiskFull,
    ReconciliationError,
    UnknownTypeError,
    UnsupportedPathError,
    explain,
    is_transient,
)
from cai_common.secrets import mask_secrets

__all__ = [
    "BaseConfig",
    "CaiError",
    "FieldProblem",
    "ConnectorConfigError",
    "ConnectorError",
    "ConnectorNotFound",
    "ConnectorRunFailed",
    "DiskFull",
    "PostgresCredentials",
    "ReconciliationError",
    "UnknownTypeError",
    "UnsupportedPathError",
    "explain",
    "is_transient",
    "mask_secrets",
]
