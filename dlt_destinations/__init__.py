"""dlt destinations, one folder per kind; each kind is registered here with one line.

A kind's folder holds its typed config, its `KIND` (what it accepts, its doctor probe, its file or
upload target) and its client code. `files.py` and `writer.py` are what every file kind shares.
"""

from cai_common.kinds import DESTINATIONS
from dlt_destinations import nfs, postgres, rest_api, s3, sftp

DESTINATIONS.register(postgres.KIND)
DESTINATIONS.register(s3.KIND)
DESTINATIONS.register(sftp.KIND)
DESTINATIONS.register(nfs.KIND)
DESTINATIONS.register(rest_api.KIND)

__all__ = ["DESTINATIONS"]
