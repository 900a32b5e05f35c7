"""``poserender tune``: a short measured probe of every (backend, precision) usable on this host.

For one exported model of any family: every backend of the registry that this machine can use,
at every precision its entry runs (engines/registry.py; a candidate it refuses here, or that
cannot be built for this model, is recorded as skipped with the reason). Each candidate runs the
model's per-frame stages (the family's ``frame_stages``, fed by the family's adapter after its
identity stages, as a stream runs them) on held-out frames of real poses; the candidates are
alternated call by call (a load change hits them alike), each gets its median ms per frame, and
its uint8 frames are compared with ONNX Runtime FP32's (:data:`REFERENCE`) through the quality
gate. The record goes to ``MODEL/probe.json`` under this host's key (engines/autopick.py), where
``--backend auto`` reads it, and each candidate's quality into manifest.json
(``precision_quality``: quality belongs to the model, speed to the host).
"""
from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import families
from ..engines import autopick, registry
from ..engines.machine import Facts
from ..errors import UserError
from .cells import open_engines
from .grid import Layout
from .inputs import BenchInputs
from .rows import Skip

#: the quality reference: what every export is verified on
REFERENCE = ("ort-cpu", "fp32")


def candidates(facts: Facts, backends: Optional[Sequence[str]] = None) -> List[Tuple[str, str, Optional[str]]]:
    """[(backend, precision, why it cannot run here or None)] of every registry entry (of
    ``backends`` when given) at every precision it runs; the reference is always among them."""
    out = []
    wanted = list(backends or registry.BACKENDS)
    if REFERENCE[0] not in wanted:
        wanted.insert(0, REFERENCE[0])
    for name in wanted:
        usable, reason = registry.BACKENDS[name].probe(facts)
        for precision in registry.BACKENDS[name].precisions:
            why = None if usable else reason
            out.append((name, precision, why or registry.refusal(name, precision, facts)))
    return out


def held_out(manifest: Mapping[str, Any], total: int, count: int) -> List[int]:
    """The frames measured: the INT8 export's held-out gate frames when it has them (never its
    calibration frames), else ``count`` frames spread over the sequence's tail."""
    from ..export.calibration import split_frames

    recorded = ((manifest.get("int8") or {}).get("quality") or {}).get("frame_indices") or []
    frames = [i for i in recorded if i < total][:count]
    return frames or split_frames(total, 1, min(count, max(1, total - 1))).gate


def measure(model_dir: Path, manifest: Mapping[str, Any], inputs: BenchInputs, indices: Sequence[int], batch: int,
            gate, rounds: int = 3, threads: Optional[int] = None, backends: Optional[Sequence[str]] = None,
            facts: Optional[Facts] = None, log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Time and gate every candidate on ``indices`` of ``inputs.frames`` in batches of ``batch``;
    write this host's entry of ``MODEL/probe.json`` and the qualities into manifest.json; return the record."""
    from ..export.quality import frame_quality

    facts = facts or Facts()
    family = families.of(manifest)
    threads = threads or 1
    batches = [list(indices[i:i + batch]) for i in range(0, len(indices), batch)]
    results: List[Dict[str, Any]] = []
    runners: Dict[Tuple[str, str], Tuple[Any, Callable]] = {}
    for backend, precision, why in candidates(facts, backends):
        if why is None:
            try:
                engines = open_engines(model_dir, manifest, family, backend, precision, Layout("default"), threads)
            except Skip as exc:
                why = str(exc)
            else:
                runners[(backend, precision)] = (engines, frame_runner(engines, inputs))
                continue
        results.append({"backend": backend, "precision": precision, "status": "skipped", "reason": why})
    if REFERENCE not in runners:
        for engines, _ in runners.values():
            engines.close()
        reason = next((r["reason"] for r in results if (r["backend"], r["precision"]) == REFERENCE), "")
        raise UserError(f"tune measures quality against {' '.join(REFERENCE)}, which cannot run here: {reason}")
    log(f"tune: {len(runners)} candidates on {len(indices)} held-out frames, batch {batch}, {rounds} rounds")
    started = time.perf_counter()
    try:
        frames = {key: np.concatenate([run(b) for b in batches]) for key, (_, run) in runners.items()}   # + warm-up
        times: Dict[Tuple[str, str], List[float]] = {key: [] for key in runners}
        for r in range(rounds):
            chunk = batches[r % len(batches)]
            for key, (_, run) in runners.items():     # alternated: a load change hits every candidate alike
                t0 = time.perf_counter()
                run(chunk)
                times[key].append((time.perf_counter() - t0) * 1e3 / len(chunk))
    finally:
        for engines, _ in runners.values():
            engines.close()
    for (backend, precision), t in times.items():
        quality = frame_quality(frames[REFERENCE], frames[(backend, precision)])
        results.append({"backend": backend, "precision": precision, "status": "ok",
                        "ms_per_frame": round(float(np.median(t)), 2), "calls_ms_per_frame": [round(x, 2) for x in t],
                        "quality": quality, "gate": {**gate.to_dict(), "passed": bool(gate.passes(quality))}})
        log(f"  {backend} {precision}: {np.median(t):.1f} ms/frame, {gate.verdict(quality, 'vs ORT FP32')}")
    record = {"host": autopick.host_info(facts),
              "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "stages": list(family.frame_stages), "batch": batch, "threads": threads, "rounds": rounds,
              "frame_indices": list(indices), "inputs": inputs.described, "reference": " ".join(REFERENCE),
              "probe_seconds": round(time.perf_counter() - started, 1), "candidates": results,
              "how": "median ms per frame of alternating calls of the per-frame stages; quality: uint8 frames vs "
                     f"{' '.join(REFERENCE)} on the same held-out frames"}
    autopick.write_record(Path(model_dir), record)
    _record_quality(Path(model_dir), record)
    return record


def frame_runner(engines, inputs: BenchInputs) -> Callable[[Sequence[int]], np.ndarray]:
    """A call of the per-frame stages on some of the inputs' frames, with this engine set's own
    identity run (each candidate through its own adapter)."""
    adapter = inputs.new_adapter()
    adapter.run_identity(engines.identity)
    stages = engines.replicas[0]

    def run(indices: Sequence[int]) -> np.ndarray:
        feed = adapter.prepare([inputs.frames[i] for i in indices])
        for engine in stages.values():
            feed.update(engine.infer(feed))
        return adapter.frames(feed)
    return run


def _record_quality(model_dir: Path, record: Dict[str, Any]) -> None:
    """Each candidate's quality vs the reference into manifest.json (``precision_quality``)."""
    from ..manifest import MANIFEST, read_manifest, write_json_atomic

    data = read_manifest(model_dir).to_dict()
    data["precision_quality"] = {
        f"{c['backend']} {c['precision']}": {**c["quality"], "gate": c["gate"], "measured": record["measured"],
                                             "cpu": record["host"]["cpu"], "reference": record["reference"],
                                             "frame_indices": record["frame_indices"]}
        for c in record["candidates"] if c.get("status") == "ok"}
    write_json_atomic(model_dir / MANIFEST, data, what="the manifest")
