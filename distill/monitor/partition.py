"""The monitor's state for one input partition: pipeline, group archive, next offset.

State is scoped per partition (a sample's answers share a partition because producers key
by ``sample_id``), so when the consumer group moves a partition to another instance, that
instance restores exactly this partition's checkpoint and seeks to its offset. Instances
must therefore share ``state_dir`` (one volume, e.g. a ReadWriteMany PVC), or run one
instance per fixed partition set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.monitor.pipeline import MonitorPipeline, PipelineConfig
from distill.statedir import StateDir
from stream.archive import SegmentArchive
from stream.checkpoint import PartitionCheckpoint, PartitionSnapshot


@dataclass
class PartitionState:
    topic: str
    partition: int
    pipeline: MonitorPipeline
    archive: SegmentArchive
    next_offset: int | None = None  # None until the first record or a checkpoint
    dirty: bool = False  # processed records since the last checkpoint

    @classmethod
    def restore(cls, state_dir: Path, topic: str, partition: int, config: PipelineConfig,
                segment_records: int) -> PartitionState:
        """Load the checkpoint if there is one; undo archive writes it does not cover."""
        pipeline = MonitorPipeline(config)
        archive = SegmentArchive(StateDir(Path(state_dir)).archive, f"{topic}-{partition}",
                                 segment_records)
        cp = PartitionCheckpoint.load(state_dir, topic, partition)
        if cp is None:
            archive.restore(None)
            return cls(topic, partition, pipeline, archive)
        pipeline.load_state(cp.state)
        archive.restore(cp.outputs.get("archive"))
        return cls(topic, partition, pipeline, archive, next_offset=cp.offset)

    def snapshot(self) -> PartitionSnapshot:
        assert self.next_offset is not None
        return PartitionSnapshot(self.topic, self.partition, self.next_offset,
                                 self.pipeline.to_state, _ArchiveOutputs(self.archive))


@dataclass
class _ArchiveOutputs:
    archive: SegmentArchive

    def checkpoint_position(self) -> dict[str, Any]:
        return {"archive": self.archive.checkpoint_position()}

    def after_checkpoint(self) -> None:
        self.archive.after_checkpoint()
