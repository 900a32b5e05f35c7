"""manifest.json: the metadata beside plain .onnx/.plan files of an exported model directory."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .errors import UserError
from .fileio import write_json_atomic  # noqa: F401  (re-exported: manifests are written with it)
from .specs import StageSpec

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
#: manifest formats this poserender reads
FORMAT_VERSIONS = (1,)
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


def read_manifest(model_dir: Union[str, Path], verify: bool = True) -> Dict[str, Any]:
    """Read and check ``DIR/manifest.json`` of an exported model: known format version, every
    stage file present, and (``verify``) every file it records a sha256 for unchanged since
    export (:func:`verify_files`)."""
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
    if not isinstance(manifest, dict):
        raise UserError("is not a JSON object; expected a manifest written by `poserender export`", path)
    version = manifest.get("format_version")
    if version not in FORMAT_VERSIONS:
        raise UserError(f"format_version {version!r}; this poserender reads format "
                        f"{', '.join(map(str, FORMAT_VERSIONS))}: re-export the model with this version "
                        "(poserender export)", path)
    for key in ("family", "stages", "config"):
        if key not in manifest:
            raise UserError(f"missing key {key!r}; expected a manifest written by `poserender export`", path)
    for stage in manifest["stages"]:
        f = model_dir / stage.get("file", "")
        if not f.is_file():
            raise UserError(f"stage {stage.get('name')!r} file {stage.get('file')!r} is missing", model_dir)
    if verify:
        verify_files(model_dir, manifest)
    return manifest


def recorded_files(manifest: Dict[str, Any]) -> Dict[str, str]:
    """{file: sha256} of every model file the manifest records a hash for: the stage graphs and
    the INT8 graphs (TensorRT plans carry their own record, checked by engines.compat)."""
    entries = list(manifest.get("stages", []))
    for key in (INT8_KEY, INT8_TRT_KEY):
        if isinstance(manifest.get(key), dict):
            entries += manifest[key].get("stages", [])
    return {e["file"]: e["sha256"] for e in entries if isinstance(e, dict) and e.get("file") and e.get("sha256")}


def verify_files(model_dir: Union[str, Path], manifest: Dict[str, Any]) -> None:
    """Refuse a model whose files differ from what the export recorded (replaced, truncated,
    edited): one line naming the file, with the fix. Hashes are remembered per file fingerprint
    (size, mtime, inode) in the user's cache, so only a new or changed file is read."""
    from .cache import VerifiedFiles

    model_dir = Path(model_dir)
    record = VerifiedFiles()
    try:
        for name, want in recorded_files(manifest).items():
            path = model_dir / name
            if not path.is_file():
                raise UserError(f"is missing; manifest.json records it (sha256 {want[:12]}...): re-export the "
                                "model (poserender export)", path)
            found = record.sha256(path, sha256_file)
            if found != want:
                raise UserError(f"does not match manifest.json (sha256 {found[:12]}..., the export recorded "
                                f"{want[:12]}...; {path.stat().st_size} bytes): the file was changed, replaced or "
                                "damaged after export; re-export the model (poserender export)", path)
    finally:
        record.save()


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
