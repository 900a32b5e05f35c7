"""One synchronous cell: the engines of a (backend, precision, layout), one call of a stage, its timing.

A cell's stages come from the model's family: ``source`` runs the identity stages in order on B
identities, ``frame`` the per-frame stages in order on B target frames of an identity whose
identity stages already ran (PSC: parsing, then frame), ``all`` both (a new identity, then its
first B frames). Feeds are made by the inputs' runtime adapter (:mod:`.inputs`), so a cell feeds
the model what a stream would. Each stage's ``engine.infer`` is timed on its own (compute).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping

import numpy as np

from ..engines import registry, select
from ..engines.base import Engine
from ..engines.torch_engine import TorchEngine
from ..errors import UserError
from .cellflops import GraphFlops, count_torch_flops
from .grid import Layout
from .inputs import BenchInputs
from .rows import Skip
from .stats import Method
from .timing import Step, measure, measure_replicated


@dataclasses.dataclass
class EngineSet:
    """Active engines of one (backend, precision, layout): each identity stage once, and the
    per-frame stages once per replica (more than one only with ``--replicate``)."""

    backend: str
    layout: str
    identity: Dict[str, Engine]
    replicas: List[Dict[str, Engine]]

    def all(self) -> List[Engine]:
        return list(self.identity.values()) + [e for replica in self.replicas for e in replica.values()]

    @property
    def runs_torch(self) -> bool:
        """The engines run torch modules (FLOPs are then counted by torch, of the modules run)."""
        return all(isinstance(e, TorchEngine) for e in self.all())

    def close(self) -> None:
        for engine in self.all():
            engine.deactivate()


def open_engines(model_dir: Path, manifest: Mapping[str, Any], family, backend: str, precision: str,
                 layout: Layout, threads: int) -> EngineSet:
    """Build and activate the engines of one layout; Skip with the reason when they cannot run."""
    kwargs: Dict[str, Any] = {"torch_stages": family.torch_stage}
    if precision != manifest.get("precision", "fp32"):
        kwargs["precision"] = precision
    replicas = max(len(layout.slots(name)) for name in family.frame_stages)
    per_worker = max(1, threads // replicas)
    opened: List[Engine] = []

    def engine(name: str, device, worker_threads: int) -> Engine:
        try:
            _, engines = select.stage_engines(model_dir, manifest, backend, device=device, threads=worker_threads,
                                              **kwargs)
            built = {e.spec.name: e for e in engines}[name].activate()
        except (UserError, ValueError, RuntimeError, ImportError, OSError) as exc:
            for done in opened:
                done.deactivate()
            raise Skip(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        opened.append(built)
        return built

    identity = {name: engine(name, layout.slots(name)[0], threads) for name in family.identity_stages}
    frames = [{name: engine(name, _slot(layout.slots(name), r), per_worker) for name in family.frame_stages}
              for r in range(replicas)]
    engines = EngineSet(backend, layout.label, identity, frames)
    if engines.runs_torch:
        import torch
        torch.set_num_threads(threads)
    return engines


def _slot(slots, replica: int):
    return slots[replica] if replica < len(slots) else slots[0]


def _timed(engine: Engine, feed: Mapping[str, np.ndarray], compute: Dict[str, float]) -> Dict[str, np.ndarray]:
    start = time.perf_counter()
    outputs = engine.infer(feed)
    compute[engine.spec.name] = time.perf_counter() - start
    return outputs


class _Timed:
    """An engine whose calls record their seconds in ``compute`` (what adapter.run_identity gets)."""

    def __init__(self, engine: Engine, compute: Dict[str, float]):
        self.engine, self.compute = engine, compute

    def infer(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return _timed(self.engine, feed, self.compute)


def identity_batch(feed: Mapping[str, np.ndarray], engines: Mapping[str, Engine], batch: int) -> Dict[str, np.ndarray]:
    """One identity's feed as ``batch`` identities (the batched inputs of the identity stages repeated)."""
    batched = {t.name for e in engines.values() for t in e.spec.inputs if t.shape and t.shape[0] == "batch"}
    return {name: np.ascontiguousarray(np.repeat(value, batch, axis=0)) if name in batched else value
            for name, value in feed.items()}


def make_step(stage: str, engines: EngineSet, inputs: BenchInputs, batch: int, replica: int = 0) -> Step:
    """One call of a cell: ({stage: compute seconds}, frames or None). The ``frame`` and ``all``
    steps take the target frames of the given indices."""
    adapter, frames = inputs.adapter, inputs.frames
    if stage == "source":
        feed = identity_batch(adapter.identity_feed(), engines.identity, batch)

        def source_step(indices: np.ndarray):
            compute: Dict[str, float] = {}
            outputs: Dict[str, np.ndarray] = {}
            for engine in engines.identity.values():
                outputs.update(_timed(engine, {**feed, **outputs}, compute))
            return compute, None
        return source_step
    frame_engines = engines.replicas[replica]

    def frame_step(indices: np.ndarray):
        compute: Dict[str, float] = {}
        if stage == "all":      # a new identity: its identity stages, then its first batch of frames
            adapter.run_identity({name: _Timed(e, compute) for name, e in engines.identity.items()})
        feed = adapter.prepare([frames[i] for i in indices.tolist()])
        for engine in frame_engines.values():
            feed.update(_timed(engine, feed, compute))
        return compute, adapter.frames(feed)
    return frame_step


def cell_engines(stage: str, engines: EngineSet) -> List[Engine]:
    """The engines whose batch is the cell's batch (``all``: the identity stages run at batch 1)."""
    return list(engines.identity.values()) if stage == "source" else list(engines.replicas[0].values())


def run_cell(stage: str, batch: int, engines: EngineSet, inputs: BenchInputs, method: Method,
             frames_out: Dict[int, np.ndarray], graph_flops: GraphFlops) -> Dict[str, Any]:
    """Time one synchronous cell (``stream`` cells are :mod:`.stream_cells`); Skip when it cannot run."""
    limit = min((e.spec for e in cell_engines(stage, engines)), key=lambda spec: spec.max_batch)
    if batch > limit.max_batch:
        raise Skip(f"the {limit.name} stage takes batch <= {limit.max_batch} (manifest.json)")
    gpu = registry.is_gpu(engines.backend)
    counted: Dict[str, Any] = {}
    n_frames = len(inputs.frames)
    if len(engines.replicas) > 1:
        if stage != "frame":
            raise Skip("--replicate replicates the per-frame stages; bench them with --stage frame")
        steps = [make_step("frame", engines, inputs, batch, r) for r in range(len(engines.replicas))]
        result = measure_replicated(steps, batch, n_frames, method, gpu)
    else:
        result = measure(make_step(stage, engines, inputs, batch), batch, n_frames, method,
                         None if stage == "source" else frames_out, gpu,
                         count_torch_flops(counted, batch) if engines.runs_torch else None)
    if "flops" in counted:
        result.update(flops_per_frame=counted["flops"], flops_from="torch FlopCounterMode, one call of this cell")
    else:
        result.update(flops_per_frame=graph_flops.per_frame(stage, batch), flops_from="ONNX graph")
    result["transfer_ms"] = None if not gpu else "inside compute: engines take and return host arrays"
    return result
