"""Loading the authors' PSC checkpoints: a folder with ``pm.pth``, ``aa.pth`` and ``ct.pth``, each a
plain state dict (quirk ``checkpoint-paths``), loaded strictly.

Accepted variations: nn.DataParallel's ``module.`` prefix; CT-Net's aliased output conv given
under either or both names (quirk ``ct-output-alias``: the effective value is
``output.model.3.*``, as in the reference, where it is loaded last).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Tuple, Union

import torch
from torch import nn

from ...errors import UserError
from ..checkpoint import safe_load
from .aa_net import AANet
from .ct_net import CTNet
from .pm_net import PMNet

CHECKPOINT_FILES = {"pm": "pm.pth", "aa": "aa.pth", "ct": "ct.pth"}
_CT_ALIASES = (("output.conv1.weight", "output.model.3.weight"), ("output.conv1.bias", "output.model.3.bias"))


def is_psc_checkpoint_dir(path: Union[str, Path]) -> bool:
    path = Path(path)
    return path.is_dir() and all((path / name).is_file() for name in CHECKPOINT_FILES.values())


def _read_state(path: Path) -> Dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"not found; a PSC checkpoint folder holds {', '.join(CHECKPOINT_FILES.values())}", path)
    state = safe_load(path, "a torch state dict")
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError("is not a plain state dict of tensors; expected what the reference saves "
                        "with torch.save(net.state_dict(), ...)", path)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def load_strict(net: nn.Module, state: Dict[str, torch.Tensor], where: Union[str, Path]) -> nn.Module:
    """Strict load with one-line errors naming the file and the first offending key."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = ([f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []) + \
                ([f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else [])
        raise UserError(f"state dict keys do not match {type(net).__name__}: {', '.join(parts)}", where)
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise UserError(f"{key} has shape {tuple(state[key].shape)}; expected {tuple(value.shape)} "
                            f"({type(net).__name__})", where)
    net.load_state_dict(state, strict=True)
    return net


def ct_state_with_aliases(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Both names of the aliased output conv, valued as the reference ends up: ``output.model.3``."""
    state = dict(state)
    for alias, effective in _CT_ALIASES:
        if effective in state:
            state[alias] = state[effective]
        elif alias in state:
            state[effective] = state[alias]
    return state


def load_psc_nets(folder: Union[str, Path], bn_stats: str = "sample") -> Tuple[PMNet, AANet, CTNet, Dict[str, Any]]:
    """(pm_net, aa_net, ct_net, info) from ``folder``, all in eval mode (AA-Net's BatchNorm follows
    ``bn_stats`` whatever the module mode). ``info`` maps each file name to its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("not a folder; expected a PSC checkpoint folder with pm.pth, aa.pth and ct.pth", folder)
    pm = load_strict(PMNet(), _read_state(folder / "pm.pth"), folder / "pm.pth")
    aa = load_strict(AANet(bn_stats=bn_stats), _read_state(folder / "aa.pth"), folder / "aa.pth")
    ct = load_strict(CTNet(), ct_state_with_aliases(_read_state(folder / "ct.pth")), folder / "ct.pth")
    info = {name: str((folder / name).resolve()) for name in CHECKPOINT_FILES.values()}
    return pm.eval(), aa.eval(), ct.eval(), info
