"""Which stage runs on which GPU: ``--devices`` and ``--replicate`` -> a per-stage device plan.

Two layouts (DESIGN.md, "Two GPUs"):

* pipeline split (default): the stage list is cut into one contiguous run per listed device,
  earlier devices taking the extra stage when it does not divide evenly (pose2img: source on
  the first device, frame on the second; psc: PM/AA on the first, CT on the second);
* ``--replicate``: every per-frame stage runs on every listed device (frames are dealt
  round-robin by the runtime); per-identity stages run once, on the first device.

A listed device is a *slot*: ``--devices 0,0`` gives two workers on GPU 0, which is how a
two-GPU layout is exercised on one GPU. Engines are built per distinct device index.
Nothing here touches CUDA; the device count comes from an injectable function.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import UserError

#: stage "runs" values in manifest.json; without one, a stage named "source" is per identity
PER_IDENTITY, PER_FRAME = "per_identity", "per_frame"


def parse_devices(text: str) -> Tuple[int, ...]:
    """``"0,1"`` -> ``(0, 1)``; repeated indices are kept (``"0,0"`` is two slots on GPU 0)."""
    parts = [p.strip() for p in str(text).split(",")]
    if not text or not all(p.isdigit() for p in parts):
        raise UserError(f"--devices {text!r}: expected comma-separated GPU indices such as 0 or 0,1")
    return tuple(int(p) for p in parts)


def stage_runs(stage: Mapping[str, Any]) -> str:
    """``per_identity`` or ``per_frame`` for a manifest stage entry."""
    runs = stage.get("runs") or (PER_IDENTITY if stage.get("name") == "source" else PER_FRAME)
    if runs not in (PER_IDENTITY, PER_FRAME):
        raise UserError(f"stage {stage.get('name')!r}: runs {runs!r}; expected {PER_IDENTITY} or {PER_FRAME}")
    return runs


@dataclasses.dataclass(frozen=True)
class Placement:
    devices: Tuple[int, ...]
    replicate: bool
    #: stage name -> the device slots running it (in slot order; repeats allowed)
    stages: Dict[str, Tuple[int, ...]]

    def engines(self) -> List[Tuple[str, int]]:
        """Distinct (stage, device index) pairs that need an engine, in stage order."""
        return [(name, d) for name, slots in self.stages.items() for d in dict.fromkeys(slots)]

    def workers(self) -> List[Tuple[str, int, int]]:
        """(stage, device index, replica number) for each worker thread the runtime starts."""
        return [(name, d, i) for name, slots in self.stages.items() for i, d in enumerate(slots)]

    def to_dict(self) -> Dict[str, Any]:
        return {"devices": list(self.devices), "replicate": self.replicate,
                "stages": {name: list(slots) for name, slots in self.stages.items()}}

    def describe(self) -> str:
        return "; ".join(f"{name} on " + ",".join(f"GPU {d}" for d in slots)
                         for name, slots in self.stages.items())


def plan_placement(stages: Sequence[Mapping[str, Any]], devices: Sequence[int],
                   replicate: bool = False) -> Placement:
    """The device plan for manifest stage entries (in pipeline order) on ``devices`` (slots)."""
    devices = tuple(int(d) for d in devices)
    names = [s["name"] for s in stages]
    if not devices:
        raise UserError("--devices is empty; expected at least one GPU index, e.g. --devices 0")
    if len(devices) == 1:
        return Placement(devices, replicate, {n: devices for n in names})
    if replicate:
        per_frame = [s["name"] for s in stages if stage_runs(s) == PER_FRAME]
        if not per_frame:
            raise UserError("--replicate: this model has no per-frame stage to replicate")
        return Placement(devices, True, {n: (devices if n in per_frame else devices[:1]) for n in names})
    if len(devices) > len(names):
        raise UserError(f"--devices {','.join(map(str, devices))}: {len(devices)} devices for {len(names)} "
                        f"stages ({', '.join(names)}); a pipeline split needs at most one device per stage "
                        "(add --replicate to run the per-frame stage on every device)")
    base, extra = divmod(len(names), len(devices))
    plan: Dict[str, Tuple[int, ...]] = {}
    start = 0
    for slot, device in enumerate(devices):
        count = base + (1 if slot < extra else 0)
        for name in names[start:start + count]:
            plan[name] = (device,)
        start += count
    return Placement(devices, False, plan)


def visible_device_count() -> int:
    """CUDA devices this process may use, from nvidia-smi and CUDA_VISIBLE_DEVICES (no CUDA import)."""
    from ..doctor import nvidia_smi

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


def check_devices(devices: Sequence[int], count_fn: Optional[Callable[[], int]] = None) -> None:
    """A device index that does not exist here is a UserError naming what does exist."""
    count = (count_fn or visible_device_count)()
    listed = ",".join(map(str, devices))
    if count == 0:
        raise UserError(f"--devices {listed}: no CUDA device is visible here (see `poserender doctor`)")
    missing = sorted({d for d in devices if d >= count})
    if missing:
        have = "index 0" if count == 1 else f"indices 0-{count - 1}"
        hint = f"; on one GPU use --devices {','.join('0' * len(devices))}" if count == 1 and len(devices) > 1 else ""
        raise UserError(f"--devices {listed}: GPU {', '.join(map(str, missing))} does not exist; this machine "
                        f"has {count} CUDA device{'s' if count > 1 else ''} ({have}){hint}")
