"""dlt sources, one folder per kind; each kind is registered here with one line.

A kind's folder holds its typed config, its `KIND` (what it yields and its doctor probe) and its
readers. `filesystem/` also holds the file-source machinery every file kind uses (listing, CSV
staging, type inference).
"""

from cai_common.kinds import SOURCES
from dlt_sources import filesystem, s3, sql_database

SOURCES.register(sql_database.KIND)
SOURCES.register(filesystem.KIND)
SOURCES.register(s3.KIND)

__all__ = ["SOURCES"]
