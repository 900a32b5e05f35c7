"""Where each stage runs: ``--devices`` parsed once, one plan for build, render, bench and triton.

``--devices`` is a list of *slots*: ``cpu`` or GPU indices, repeats allowed (``cpu,cpu`` is two
CPU workers, ``0,0`` two workers on GPU 0, which is how a two-GPU layout is exercised on one
GPU); the CPU and GPUs are not mixed in one list (a run uses one backend). Two layouts:

* pipeline split (default): the model's stages (in manifest order) are cut into one contiguous
  run per listed slot, earlier slots taking the extra stage when it does not divide evenly
  (pose2img on 0,1: source on 0, frame on 1; psc on 0,1: source and interp on 0, parsing and
  frame on 1);
* ``--replicate``: every per-frame stage runs on every listed slot (frames are dealt
  round-robin by the runtime); per-identity stages run once, on the first slot.

``build`` builds an engine for each (stage, device) of the plan and records the plan in the
manifest; ``render`` starts one worker per (frame stage, slot) of the same plan; ``bench`` and
``triton`` read it too. Nothing here touches CUDA; the device count comes from an injectable
function.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import UserError

#: stage "runs" values in manifest.json; without one, a stage named "source" is per identity
PER_IDENTITY, PER_FRAME = "per_identity", "per_frame"
CPU = "cpu"


def parse_devices(text: Union[str, Sequence[Union[str, int]], None], default: str = CPU) -> Tuple[str, ...]:
    """``"0,1"`` -> ``("0", "1")``, ``"cpu,cpu"`` -> ``("cpu", "cpu")``, None -> ``(default,)``."""
    if text is None:
        return (default,)
    parts = [str(p).strip().lower() for p in (text.split(",") if isinstance(text, str) else text)]
    if not parts or any(not p for p in parts):
        raise UserError(f"--devices {text!r}: expected cpu, or comma-separated GPU indices such as 0 or 0,1")
    if all(p == CPU for p in parts):
        return tuple(parts)
    if all(p.isdigit() for p in parts):
        return tuple(str(int(p)) for p in parts)
    raise UserError(f"--devices {text!r}: expected cpu (cpu,cpu for two workers) or GPU indices such as 0,1; "
                    "the CPU and GPUs cannot be mixed in one list")


def gpu_indices(devices: Sequence[str]) -> Tuple[int, ...]:
    """The GPU indices of a parsed device list (empty for the CPU)."""
    return tuple(int(d) for d in devices if d != CPU)


def stage_runs(stage: Mapping[str, Any]) -> str:
    """``per_identity`` or ``per_frame`` for a manifest stage entry."""
    runs = stage.get("runs") or (PER_IDENTITY if stage.get("name") == "source" else PER_FRAME)
    if runs not in (PER_IDENTITY, PER_FRAME):
        raise UserError(f"stage {stage.get('name')!r}: runs {runs!r}; expected {PER_IDENTITY} or {PER_FRAME}")
    return runs


@dataclasses.dataclass(frozen=True)
class Placement:
    devices: Tuple[str, ...]
    replicate: bool
    #: stage name -> the device slots running it (in slot order; repeats allowed)
    stages: Dict[str, Tuple[str, ...]]

    def engines(self) -> List[Tuple[str, str]]:
        """Distinct (stage, device) pairs that need an engine, in stage order."""
        return [(name, d) for name, slots in self.stages.items() for d in dict.fromkeys(slots)]

    def workers(self, names: Optional[Sequence[str]] = None) -> List[Tuple[str, str, int]]:
        """(stage, device, replica number) for each worker thread, for ``names`` (default all stages)."""
        names = list(self.stages) if names is None else names
        return [(name, d, i) for name in names for i, d in enumerate(self.stages[name])]

    def to_dict(self) -> Dict[str, Any]:
        return {"devices": list(self.devices), "replicate": self.replicate,
                "stages": {name: list(slots) for name, slots in self.stages.items()}}

    def describe(self) -> str:
        label = lambda d: "CPU" if d == CPU else f"GPU {d}"  # noqa: E731
        return "; ".join(f"{name} on " + ",".join(label(d) for d in slots) for name, slots in self.stages.items())


def plan_placement(stages: Sequence[Mapping[str, Any]], devices: Sequence[Union[str, int]],
                   replicate: bool = False) -> Placement:
    """The device plan for manifest stage entries (in pipeline order) on ``devices`` (slots)."""
    devices = parse_devices([str(d) for d in devices]) if devices else ()
    names = [s["name"] for s in stages]
    if not devices:
        raise UserError("--devices is empty; expected at least one device, e.g. --devices 0 or cpu")
    if len(devices) == 1:
        return Placement(devices, replicate, {n: devices for n in names})
    if replicate:
        per_frame = [s["name"] for s in stages if stage_runs(s) == PER_FRAME]
        if not per_frame:
            raise UserError("--replicate: this model has no per-frame stage to replicate")
        return Placement(devices, True, {n: (devices if n in per_frame else devices[:1]) for n in names})
    if len(devices) > len(names):
        raise UserError(f"--devices {','.join(devices)}: {len(devices)} devices for {len(names)} "
                        f"stages ({', '.join(names)}); a pipeline split needs at most one device per stage "
                        "(add --replicate to run the per-frame stage on every device)")
    base, extra = divmod(len(names), len(devices))
    plan: Dict[str, Tuple[str, ...]] = {}
    start = 0
    for slot, device in enumerate(devices):
        count = base + (1 if slot < extra else 0)
        for name in names[start:start + count]:
            plan[name] = (device,)
        start += count
    return Placement(devices, False, plan)


def visible_device_count() -> int:
    """CUDA devices this process may use, from nvidia-smi and CUDA_VISIBLE_DEVICES (no CUDA import)."""
    from .machine import nvidia_smi

    found = len(nvidia_smi().get("gpus", []))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return found
    entries = [v.strip() for v in visible.split(",") if v.strip()]
    listed = []
    for entry in entries:           # CUDA stops at the first invalid entry (e.g. -1)
        if entry.startswith("-"):
            break
        listed.append(entry)
    return min(found, len(listed))


def check_devices(devices: Sequence[Union[str, int]], count_fn: Optional[Callable[[], int]] = None) -> None:
    """A GPU index that does not exist here is a UserError naming what does exist (CPU slots pass)."""
    indices = gpu_indices([str(d) for d in devices])
    if not indices:
        return
    count = (count_fn or visible_device_count)()
    listed = ",".join(map(str, indices))
    if count == 0:
        raise UserError(f"--devices {listed}: no CUDA device is visible here (see `poserender doctor`)")
    missing = sorted({d for d in indices if d >= count})
    if missing:
        have = "index 0" if count == 1 else f"indices 0-{count - 1}"
        hint = f"; on one GPU use --devices {','.join('0' * len(indices))}" if count == 1 and len(indices) > 1 else ""
        raise UserError(f"--devices {listed}: GPU {', '.join(map(str, missing))} does not exist; this machine "
                        f"has {count} CUDA device{'s' if count > 1 else ''} ({have}){hint}")
