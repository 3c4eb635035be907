"""The `s3` destination kind: objects under a prefix of an S3 / MinIO bucket, multipart above 25 MB."""

from __future__ import annotations

from cai_common.kinds import DestinationKind, Probe
from dlt_destinations.s3.configuration import S3DestinationConfig
from dlt_destinations.writer import FileTarget

MULTIPART_ABOVE = 25 * 1024 * 1024
"""The spec's rule (6.2): one request up to 25 MB, multipart in parts of `chunk_size_mb` above."""


def file_target(config: S3DestinationConfig) -> FileTarget:
    """The prefix: uploads appear whole when complete; a same-endpoint source is copied server-side."""
    from dlt_destinations.s3.objects import copy_within

    fs = config.filesystem(fixed_upload_size=True)  # every multipart part exactly `chunk_size_mb`
    root = f"{config.bucket}/{config.prefix.strip('/')}".rstrip("/")
    return FileTarget("s3", fs, root, object_store=True, part_size=config.chunk_size_mb * 1024 * 1024,
                      multipart_above=MULTIPART_ABOVE, copy_within=copy_within(fs))


def probe(config: S3DestinationConfig) -> Probe:
    """The bucket can be listed."""
    return Probe(f"s3://{config.bucket}/{config.prefix}", lambda: config.list_bucket(config.bucket))


KIND = DestinationKind(
    code="s3", config=S3DestinationConfig, accepts=frozenset({"files"}), description="S3 bucket prefix",
    aliases=("minio",), probe=probe, file_target=file_target,
)
