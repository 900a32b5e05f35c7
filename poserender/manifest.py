"""manifest.json: the metadata beside plain .onnx/.plan files of an exported model directory."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .errors import UserError
from .fileio import temp_file_beside
from .specs import StageSpec

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
#: manifest key of the calibrated INT8 graphs (written by export.quantize.add_int8)
INT8_KEY = "int8"
#: the TensorRT-ready INT8 graphs (symmetric int8 Q/DQ, export --int8-target trt|both)
INT8_TRT_KEY = "int8_trt"


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Union[str, Path], data: Dict[str, Any]) -> None:
    path = Path(path)
    fd, tmp = temp_file_beside(path)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def read_manifest(model_dir: Union[str, Path]) -> Dict[str, Any]:
    """Read and sanity-check ``DIR/manifest.json`` of an exported model."""
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST
    if not model_dir.is_dir():
        raise UserError("not a directory; expected an exported model folder (poserender export ... -o DIR)", model_dir)
    if not path.is_file():
        raise UserError(f"no {MANIFEST}; expected a folder written by `poserender export`", model_dir)
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"not valid JSON ({exc})", path) from None
    for key in ("family", "stages", "config"):
        if key not in manifest:
            raise UserError(f"missing key {key!r}; expected a manifest written by `poserender export`", path)
    for stage in manifest["stages"]:
        f = model_dir / stage.get("file", "")
        if not f.is_file():
            raise UserError(f"stage {stage.get('name')!r} file {stage.get('file')!r} is missing", model_dir)
    return manifest


def stage_specs(manifest: Dict[str, Any]) -> List[StageSpec]:
    return [StageSpec.from_dict(s) for s in manifest["stages"]]


def int8_stage_files(manifest: Dict[str, Any], key: str = INT8_KEY) -> Optional[Dict[str, str]]:
    """{stage name: file to run at --precision int8}: the INT8 graph where the manifest's ``int8``
    entry (``key``; ``int8_trt`` for TensorRT) has one, else the stage's FP32 file; None when the
    model has no such INT8 graphs."""
    entry = manifest.get(key)
    if not isinstance(entry, dict) or not entry.get("stages"):
        return None
    files = {s["name"]: s["file"] for s in manifest["stages"]}
    files.update({s["name"]: s["file"] for s in entry["stages"]})
    return files
