"""PSC fixtures: ../shared/fixtures/psc (reference outputs for kaiming-crc32-v1 weights) and nets
loaded with those weights. Tests that need ../shared skip with the reason when it is absent."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[3].parent / "shared"
PSC_FIXTURES = SHARED / "fixtures" / "psc"
PSC_DATA = SHARED / "data" / "psc" / "test"
SKIP_REASON = "../shared/fixtures/psc not found: PSC reference fixtures are not in this checkout"


def need_fixtures() -> Path:
    if not (PSC_FIXTURES / "manifest.json").is_file() or not (SHARED / "fixtures" / "weights.py").is_file():
        pytest.skip(SKIP_REASON)
    return PSC_FIXTURES


def T(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def grid(x, index):
    return x[:, :, index][:, :, :, index]


@pytest.fixture(scope="session")
def psc_nets(psc_checkpoint_dir):
    from poserender.models.psc.checkpoint import load_psc_nets

    torch.set_num_threads(2)   # the fixtures were made with 2 threads
    pm, aa, ct, _ = load_psc_nets(psc_checkpoint_dir)
    return pm, aa, ct


def cases(manifest):
    return [(c, np.load(PSC_FIXTURES / c["sample_file"]), np.load(PSC_FIXTURES / c["file"])) for c in manifest["cases"]]


#: case indices in manifest order; 0 = the full case (t 0.2), 2 = a t = 1 case run by default,
#: the other four only with -m slow (full-size nets take ~1 s per forward on 2 loaded cores)
CASE_PARAMS = [pytest.param(i, id=f"case{i}", marks=() if i in (0, 2) else pytest.mark.slow) for i in range(6)]


def one_case(manifest, i):
    c = manifest["cases"][i]
    return c, np.load(PSC_FIXTURES / c["sample_file"]), np.load(PSC_FIXTURES / c["file"])
