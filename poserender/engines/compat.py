"""Compatibility manifest of TensorRT engines: what a .plan was built for, checked before loading.

A TensorRT plan is tied to the TensorRT version and the GPU it was built on; loading it
elsewhere crashes or silently runs slow tactics. ``poserender build`` records, per plan, in
manifest.json (``engines``): TensorRT, CUDA and driver versions, GPU name and compute
capability, precision, optimization profile, the layers kept in FP32, and the sha256 of the
ONNX graph and of the plan. Before deserialising, :func:`check_engine` compares that record
with this machine and the model folder; any difference is one line naming what differs and
the exact command that rebuilds it.

The facts about "this machine" come from a function passed in (``facts_fn``), so the whole
decision is tested on a CPU with made-up machines.
"""
from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from ..errors import UserError
from ..manifest import sha256_file

#: the facts about the build machine that a plan depends on, in the order they are reported
MACHINE_FIELDS = ("tensorrt", "cuda", "driver", "gpu_name", "compute_capability")


@dataclasses.dataclass(frozen=True)
class MachineFacts:
    tensorrt: str             # tensorrt.__version__, e.g. "10.3.0"
    cuda: str                 # CUDA version of the libraries in use, e.g. "12.4"
    driver: str               # NVIDIA driver, as nvidia-smi prints it, e.g. "550.54.15"
    gpu_name: str             # e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: str   # e.g. "9.0"

    def to_dict(self) -> Dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Mismatch:
    field: str
    recorded: Any
    current: Any

    def __str__(self) -> str:
        label = {"tensorrt": "TensorRT", "cuda": "CUDA", "driver": "driver", "gpu_name": "GPU",
                 "compute_capability": "compute capability", "precision": "precision",
                 "profile": "batch profile", "onnx_sha256": "ONNX graph sha256",
                 "plan_sha256": "plan sha256", "plan_file": "plan file",
                 "graph_sha256": "INT8 graph sha256"}[self.field]
        if self.field.endswith("sha256"):
            return f"{label} {str(self.recorded)[:12]} recorded, {str(self.current)[:12]} now"
        return f"{label} {self.recorded} (built) vs {self.current} (here)"


class EngineMismatch(UserError):
    """A plan that must not be loaded here; the message carries the rebuild command."""

    def __init__(self, message: str, path: Union[str, Path], mismatches: List[Mismatch]):
        self.mismatches = mismatches
        super().__init__(message, path)


def current_facts(device: int) -> MachineFacts:
    """This machine, for GPU ``device`` (imports tensorrt and pycuda; GPU machines only)."""
    import tensorrt

    from .machine import nvidia_smi
    from . import cuda_mem

    gpu = cuda_mem.device_facts(device)
    smi = nvidia_smi().get("gpus", [])
    driver = smi[device]["driver_version"] if device < len(smi) else gpu["driver_cuda"]
    return MachineFacts(tensorrt.__version__, gpu["cuda"], driver, gpu["name"], gpu["compute_capability"])


def _major(version: str) -> str:
    return str(version).split(".")[0]


def version_tuple(version: str) -> tuple:
    """``"550.54.15"`` -> (550, 54, 15); each part's leading digits (``"23rc1"`` -> 23, none -> 0),
    so versions with suffixes still compare."""
    return tuple(int(re.match(r"\d*", part).group() or 0) for part in str(version).split("."))


def machine_mismatches(recorded: Mapping[str, Any], facts: MachineFacts) -> List[Mismatch]:
    """What about this machine makes the recorded plan unusable.

    TensorRT, GPU name and compute capability must be equal (a plan is specific to both; the
    same compute capability on another GPU model loads but runs tactics timed elsewhere).
    CUDA must match in its major version (TensorRT builds are per CUDA major). A newer driver
    is fine; an older one than the build machine's may lack what the plan's kernels need.
    """
    out = []
    for field in ("tensorrt", "gpu_name", "compute_capability"):
        if str(recorded.get(field)) != str(getattr(facts, field)):
            out.append(Mismatch(field, recorded.get(field), getattr(facts, field)))
    if _major(recorded.get("cuda", "")) != _major(facts.cuda):
        out.append(Mismatch("cuda", recorded.get("cuda"), facts.cuda))
    try:
        older_driver = version_tuple(facts.driver) < version_tuple(recorded.get("driver", ""))
    except TypeError:               # unparsable version strings: compare as text
        older_driver = str(facts.driver) != str(recorded.get("driver"))
    if older_driver:
        out.append(Mismatch("driver", recorded.get("driver"), facts.driver))
    return out


def model_mismatches(record: Mapping[str, Any], stage: Mapping[str, Any], plan_path: Path,
                     precision: Optional[str] = None) -> List[Mismatch]:
    """What about the model folder makes the plan stale: another ONNX graph, another batch
    range, another precision than asked for, or a plan file that is missing or was replaced."""
    out = []
    if record.get("onnx_sha256") != stage.get("sha256"):
        out.append(Mismatch("onnx_sha256", record.get("onnx_sha256"), stage.get("sha256")))
    graph = record.get("graph")              # an INT8 plan: built from the stage's Q/DQ graph
    if graph and graph != stage.get("file"):
        graph_path = plan_path.parent / graph
        found = sha256_file(graph_path) if graph_path.is_file() else "missing"
        if found != record.get("graph_sha256"):
            out.append(Mismatch("graph_sha256", record.get("graph_sha256"), found))
    batch = stage.get("batch", {})
    wanted = {k: batch.get(k) for k in ("min", "opt", "max")}
    if dict(record.get("profile", {})) != wanted:
        fmt = lambda p: "{min}/{opt}/{max}".format(**{k: p.get(k) for k in ("min", "opt", "max")})  # noqa: E731
        out.append(Mismatch("profile", fmt(record.get("profile", {})), fmt(wanted)))
    if precision is not None and record.get("precision") != precision:
        out.append(Mismatch("precision", record.get("precision"), precision))
    if not plan_path.is_file():
        out.append(Mismatch("plan_file", record.get("file"), "missing"))
    elif sha256_file(plan_path) != record.get("plan_sha256"):
        out.append(Mismatch("plan_sha256", record.get("plan_sha256"), sha256_file(plan_path)))
    return out


def rebuild_command(model_dir: Union[str, Path], build: Mapping[str, Any]) -> str:
    """The exact `poserender build` command that reproduces the recorded build options."""
    args = ["poserender", "build", str(model_dir), "--precision", str(build.get("precision", "fp32")),
            "--devices", ",".join(str(d) for d in build.get("devices", [0]))]
    if build.get("replicate"):
        args.append("--replicate")
    if build.get("optimization_level") is not None:
        args += ["--optimization-level", str(build["optimization_level"])]
    return " ".join(shlex.quote(a) for a in args)


def find_record(manifest: Mapping[str, Any], stage: str, device: int,
                precision: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The engine record for (stage, device[, precision]); the newest one wins."""
    found = [r for r in manifest.get("engines", []) if r.get("stage") == stage and int(r.get("device", -1)) == device
             and (precision is None or r.get("precision") == precision)]
    return found[-1] if found else None


def check_engine(model_dir: Union[str, Path], manifest: Mapping[str, Any], stage: str, device: int,
                 precision: Optional[str] = None,
                 facts_fn: Callable[[int], MachineFacts] = current_facts) -> Dict[str, Any]:
    """The record of a plan that is safe to load here, or EngineMismatch (one line + rebuild)."""
    model_dir = Path(model_dir)
    build = dict(manifest.get("build") or {"precision": precision or "fp32", "devices": [device]})
    if precision:
        build["precision"] = precision
    command = rebuild_command(model_dir, build)
    record = find_record(manifest, stage, device, precision)
    if record is None:
        what = f"{precision} " if precision else ""
        raise EngineMismatch(f"no {what}TensorRT engine for stage {stage!r} on GPU {device}; build it: {command}",
                             model_dir, [])
    stage_entry = next((s for s in manifest.get("stages", []) if s.get("name") == stage), {})
    plan_path = model_dir / record.get("file", "")
    found = machine_mismatches(record, facts_fn(device)) + model_mismatches(record, stage_entry, plan_path, precision)
    if found:
        raise EngineMismatch(f"engine does not match: {'; '.join(map(str, found))}; rebuild: {command} "
                             "(or add --rebuild-if-needed)", plan_path, found)
    return record


def engine_record(stage: str, device: int, plan_file: str, plan_sha256: str, onnx_sha256: str,
                  precision: str, profile: Mapping[str, int], fp32_layers: List[str], facts: MachineFacts,
                  extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The manifest entry written by `poserender build` for one plan."""
    return {"stage": stage, "device": device, "file": plan_file, "precision": precision,
            "profile": dict(profile), "plan_sha256": plan_sha256, "onnx_sha256": onnx_sha256,
            **facts.to_dict(), "fp32_layers": list(fp32_layers), **(extra or {})}
