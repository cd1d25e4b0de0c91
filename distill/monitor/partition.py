"""The durable state of one partition the monitor owns, of either stage.

An input partition holds an ingest stage and its group archive; a partition of the internal
observations topic holds a detect stage. Both are checkpointed with the offset they cover
(:mod:`stream.checkpoint`), so when the consumer group moves a partition to another
instance, that instance restores exactly this partition's checkpoint and seeks to its
offset. Instances must therefore share ``state_dir`` (one volume, e.g. a ReadWriteMany
PVC), or run one instance per fixed partition set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.monitor.detect import DetectStage
from distill.monitor.ingest import DriftView, IngestStage
from distill.monitor.pipeline import STATE_VERSION, PipelineConfig, check_version
from distill.statedir import StateDir
from stream.archive import SegmentArchive
from stream.checkpoint import PartitionCheckpoint, PartitionSnapshot


@dataclass
class PartitionState:
    topic: str
    partition: int
    stage: IngestStage | DetectStage
    archive: SegmentArchive | None = None  # the ingest stage's groups
    next_offset: int | None = None  # None until the first record or a checkpoint
    dirty: bool = False  # processed records since the last checkpoint

    @property
    def ingest(self) -> IngestStage:
        assert isinstance(self.stage, IngestStage)
        return self.stage

    @property
    def detect(self) -> DetectStage:
        assert isinstance(self.stage, DetectStage)
        return self.stage

    @classmethod
    def restore_ingest(cls, state_dir: Path, topic: str, partition: int,
                       config: PipelineConfig, segment_records: int,
                       drift_view: DriftView) -> PartitionState:
        """Load the checkpoint if there is one; undo archive writes it does not cover."""
        stage = config.ingest(partition, drift_view)
        archive = SegmentArchive(StateDir(Path(state_dir)).archive, f"{topic}-{partition}",
                                 segment_records)
        cp = PartitionCheckpoint.load(state_dir, topic, partition)
        if cp is None:
            archive.restore(None)
            return cls(topic, partition, stage, archive)
        check_version(cp.state)
        stage.load_state(cp.state["ingest"])
        archive.restore(cp.outputs.get("archive"))
        return cls(topic, partition, stage, archive, next_offset=cp.offset)

    @classmethod
    def restore_detect(cls, state_dir: Path, topic: str, partition: int,
                       config: PipelineConfig) -> PartitionState:
        stage = config.detect()
        cp = PartitionCheckpoint.load(state_dir, topic, partition)
        if cp is None:
            return cls(topic, partition, stage)
        check_version(cp.state)
        stage.load_state(cp.state["detect"])
        return cls(topic, partition, stage, next_offset=cp.offset)

    def state(self) -> dict[str, Any]:
        name = "ingest" if isinstance(self.stage, IngestStage) else "detect"
        return {"version": STATE_VERSION, name: self.stage.to_state()}

    def snapshot(self) -> PartitionSnapshot:
        assert self.next_offset is not None
        outputs = _ArchiveOutputs(self.archive) if self.archive is not None else None
        return PartitionSnapshot(self.topic, self.partition, self.next_offset, self.state,
                                 outputs)

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()


@dataclass
class _ArchiveOutputs:
    archive: SegmentArchive

    def checkpoint_position(self) -> dict[str, Any]:
        return {"archive": self.archive.checkpoint_position()}

    def after_checkpoint(self) -> None:
        self.archive.after_checkpoint()
