"""The resumable store of a dataset-scale explain + evaluate job (issue 18).

A store is a folder: ``job.json`` (the validated job), ``manifest.json`` (the
finished shards, replaced atomically after a shard's data is written), Zarr
arrays for the display images, the maps and the curves (one chunk per image),
and Parquet tables of the metric values and the predictions, one file per
shard. Only images of finished shards are readable; a shard half-written when
a job was killed is written again, whole, when the job resumes.

``cnnlens.store.open(path)`` reads one back (:class:`Store`); jobs write
through :class:`StoreWriter`.
"""

from __future__ import annotations

from .layout import is_store
from .reader import Store, open
from .writer import ShardData, StoreWriter

__all__ = ["ShardData", "Store", "StoreWriter", "is_store", "open"]
