"""Dataset-scale explain + evaluate jobs into a resumable store (issue 18).

``cnnlens.jobs.run(model=..., data="shapes", methods={...}, store=...)`` or
``cnnlens run job.yaml``: a job is validated up front (:mod:`.spec`), cut into
shards of images, run on the ``local`` engine (this process or N worker
processes, :mod:`.local`) or on Ray (:mod:`.ray_engine`), and written to a
:mod:`cnnlens.store` that a rerun resumes.
"""

from __future__ import annotations

from .runner import JobResult, run, summarise
from .spec import JobSpec, prepare

__all__ = ["JobResult", "JobSpec", "prepare", "run", "summarise"]
