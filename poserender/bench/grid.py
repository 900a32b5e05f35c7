"""The grid ``poserender bench`` measures: backends x precisions x batches x stages x a device layout.

Options are parsed here once (one line naming the option for a bad value); backends come from
the registry (engines/registry.py), device layouts from the one placement plan every command
shares (engines/placement.py). Running the grid is :mod:`.run`.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..engines import registry
from ..engines.placement import Placement, parse_devices, plan_placement
from ..errors import UserError

#: what one timed call of a cell is (docs/bench.md): the identity stages, the per-frame stages,
#: both (a new identity), or a whole stream through the streaming runtime
STAGES = ("source", "frame", "all", "stream")
#: every precision some backend of the registry runs (a backend that cannot run one skips its cells)
PRECISIONS = registry.all_precisions()


@dataclasses.dataclass
class Grid:
    backends: List[str]
    stages: List[str] = dataclasses.field(default_factory=lambda: ["frame"])
    batches: List[int] = dataclasses.field(default_factory=lambda: [1, 4, 8])
    precisions: List[str] = dataclasses.field(default_factory=lambda: ["fp32"])
    devices: List[str] = dataclasses.field(default_factory=list)      # parsed --devices slots; [] = default
    replicate: bool = False


def parse_ints(text: str, option: str) -> List[int]:
    """'1,4,8' -> [1, 4, 8]; UserError naming the option otherwise."""
    try:
        values = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UserError(f"{option} {text!r}; expected comma-separated positive integers, e.g. 1,4,8")
    return list(dict.fromkeys(values))


def parse_names(text: str, option: str, valid: Sequence[str]) -> List[str]:
    """'frame,stream' -> ['frame', 'stream']; an unknown name is one line with the nearest valid one."""
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    for name in names:
        if name not in valid:
            near = difflib.get_close_matches(name, valid, 1)
            raise UserError(f"{option} {name!r}; expected one of {', '.join(valid)}"
                            + (f" (did you mean {near[0]}?)" if near else ""))
    if not names:
        raise UserError(f"{option} is empty; expected one of {', '.join(valid)}")
    return list(dict.fromkeys(names))


def known_backends() -> Tuple[str, ...]:
    """Every backend of the registry (engines/registry.py), in its order."""
    return registry.names()


def parse_backends(text: str) -> List[str]:
    """--backend: registry names or ``all``. An unknown name is a user error (a typo must not end
    as a run that times nothing); a known backend this machine cannot run is kept, and its cells
    become skipped rows with the registry's reason."""
    known = known_backends()
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if names == ["all"]:
        return list(known)
    if not names:
        raise UserError(f"--backend {text!r}; expected names from {', '.join(known)} or all")
    for name in names:
        if name not in known:
            near = difflib.get_close_matches(name, known, 1)
            raise UserError(f"--backend {name!r}: unknown backend; known: {', '.join(known)} or all"
                            + (f" (did you mean {near[0]}?)" if near else ""))
    return list(dict.fromkeys(names))


def backend_status(names: Sequence[str]) -> Dict[str, Tuple[bool, str]]:
    """{name: (usable, reason)} from the registry's probes (names as :func:`parse_backends` checked)."""
    machine = registry.availability()
    return {name: machine[name] for name in names}


def parse_device_slots(text: Optional[str]) -> List[str]:
    """--devices as engines.placement parses it for every command ([] when not given)."""
    return [] if text is None else list(parse_devices(text))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one engine set's stages run: ``label`` as the rows show it, ``placement`` the plan of
    engines.placement (None: every stage on the backend's default device)."""

    label: str
    placement: Optional[Placement] = None

    def slots(self, stage: str) -> Tuple[Optional[str], ...]:
        """The device slots of ``stage`` (one per replica); (None,) for the default device."""
        return (None,) if self.placement is None else self.placement.stages[stage]

    @property
    def devices(self) -> Tuple[str, ...]:
        return () if self.placement is None else self.placement.devices


def layout(devices: Sequence[str], replicate: bool, stages: Sequence[Mapping[str, Any]]) -> Layout:
    """The layout of ``devices`` (parsed slots) for a model's manifest stage entries: the same plan
    ``render`` and ``build`` make (a pipeline split, or the per-frame stages replicated)."""
    if not devices:
        return Layout("default")
    placement = plan_placement(stages, devices, replicate)
    if replicate:
        label = f"replicate {','.join(devices)}"
    elif len(devices) == 1:
        label = f"device {devices[0]}"
    else:
        label = "split " + ">".join(devices)
    return Layout(label, placement)
