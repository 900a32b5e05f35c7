"""torch stage module -> plain .onnx file (dynamic batch, checker-clean)."""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from torch import nn

from ..manifest import MANIFEST, write_json_atomic
from ..specs import StageSpec

OPSET = 17


def export_stage(module: nn.Module, spec: StageSpec, path: Path, sample: Dict[str, np.ndarray]) -> None:
    """Trace ``module`` on ``sample`` and write ``path`` (temp file + rename), then run onnx.checker."""
    import onnx

    args = tuple(torch.from_numpy(sample[name]) for name in spec.input_names)
    tmp = path.with_name(f".{path.name}.partial")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript tracer chatter about constant shapes
        torch.onnx.export(module, args, str(tmp), input_names=spec.input_names,
                          output_names=spec.output_names, dynamic_axes=spec.dynamic_axes(),
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    model = onnx.load(str(tmp))
    onnx.checker.check_model(model, full_check=True)
    os.replace(tmp, path)


def publish(work: Path, out_dir: Path, manifest: Dict) -> Dict:
    """Write manifest.json into the verified work folder, then move it into place as ``out_dir``
    (an earlier export there is replaced). The caller removes ``work`` if anything failed."""
    write_json_atomic(Path(work) / MANIFEST, manifest)
    if Path(out_dir).exists():
        shutil.rmtree(out_dir)
    os.replace(work, out_dir)
    return manifest
