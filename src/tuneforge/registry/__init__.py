"""The registry: runs, datasets, published models (versions, lineage) and services.

SQLite under TUNEFORGE_HOME by default, or any SQLAlchemy URL (`Settings.db_url`). It
indexes what lives on disk and is never the only copy of anything.
"""

from tuneforge.registry.records import (
    DatasetRecord,
    ModelRecord,
    ModelVersionRecord,
    RunRecord,
    ServiceRecord,
)
from tuneforge.registry.store import Registry

__all__ = [
    "DatasetRecord",
    "ModelRecord",
    "ModelVersionRecord",
    "Registry",
    "RunRecord",
    "ServiceRecord",
]
