"""The registry: runs, the service's jobs, datasets, published models (versions, lineage)
and services.

SQLite under TUNEFORGE_HOME by default, or any SQLAlchemy URL (`Settings.db_url`). It
indexes what lives on disk and is never the only copy of anything.
"""

from tuneforge.registry.records import (
    DatasetRecord,
    JobRecord,
    ModelRecord,
    ModelVersionRecord,
    RunRecord,
    ServiceRecord,
)
from tuneforge.registry.store import Registry

__all__ = [
    "DatasetRecord",
    "JobRecord",
    "ModelRecord",
    "ModelVersionRecord",
    "Registry",
    "RunRecord",
    "ServiceRecord",
]
