"""Who started the anneal: the loop's small interface to its runner.

The anneal (`anneal.loop.anneal`) reads its data shards, finds the checkpoint it restarts
from and reports metrics and checkpoints through a `Session`, so one loop runs both as a
Ray Train worker (`TrainSession`, multi-worker cells) and inside a Ray Tune trial's own
process (`annealscale.tune.warm.WarmSession`, single-worker cells). Ray Train V2's context
(``ray.train.report``/``get_context``/``get_checkpoint``) raises inside a Tune trial in
Ray 2.60, so the loop never calls it directly.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol


class Session(Protocol):
    """What the anneal asks of whoever runs it."""

    rank: int
    world_size: int

    def dataset(self, name: str):
        """This rank's shard of dataset ``name`` (``domain`` or ``replay``): an object with
        Ray Data's ``iter_batches``."""

    def restored(self) -> AbstractContextManager[str | None]:
        """The run's own latest checkpoint as a local directory, or None on a fresh start."""

    def report(
        self, metrics: dict, *, checkpoint: Path | None = None, name: str | None = None
    ) -> None:
        """Report ``metrics``, with this rank's ``checkpoint`` directory stored as ``name``."""


class TrainSession:
    """`Session` of a Ray Train worker: Train's context, dataset shards and checkpoints."""

    def __init__(self):
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def dataset(self, name: str):
        import ray.train

        return ray.train.get_dataset_shard(name)

    @contextmanager
    def restored(self):
        import ray.train

        from annealscale.anneal.checkpoint_restore import restored_directory

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        # on remote storage a rank fetches only the shared files and its own shards
        with restored_directory(checkpoint, rank=self.rank, world_size=self.world_size) as path:
            yield path

    def report(self, metrics: dict, *, checkpoint: Path | None = None, name: str | None = None):
        import ray.train

        if checkpoint is None:
            ray.train.report(metrics)
            return
        # Ray Train merges the ranks' files (named by rank) into one checkpoint directory
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(str(checkpoint)),
            checkpoint_dir_name=name,
        )
