"""manifest.json: the metadata beside plain .onnx/.plan files of an exported model directory.

:func:`read_manifest` loads and checks it once (format version, files present and unchanged) into
a :class:`Manifest`: the fields every command uses are typed attributes (``family``, ``canvas``,
``stages`` as StageSpecs, ``config``, ``checkpoint``), the family's own fields are reachable by
key as before (it is a read-only mapping of the JSON), and ``to_dict()`` gives a copy to edit and
write back with :func:`write_json_atomic`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from .errors import UserError
from .fileio import write_json_atomic  # noqa: F401  (re-exported: manifests are written with it)
from .specs import StageSpec

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
#: manifest formats this poserender reads
FORMAT_VERSIONS = (1,)
#: manifest key of the calibrated INT8 graphs (written by export.int8.add_int8)
INT8_KEY = "int8"
#: the TensorRT-ready INT8 graphs (symmetric int8 Q/DQ, export --int8-target trt|both)
INT8_TRT_KEY = "int8_trt"
#: the NNCF-quantized OpenVINO IR (export --int8-target ov), with which INT8 graph ov-cpu runs
INT8_NNCF_KEY = "int8_nncf"
#: every manifest key of INT8 graphs
INT8_KEYS = (INT8_KEY, INT8_TRT_KEY, INT8_NNCF_KEY)


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class Manifest(Mapping[str, Any]):
    """A checked manifest.json of the model in ``dir`` (see the module doc)."""

    dir: Path
    data: Mapping[str, Any]
    family: str
    canvas: Tuple[int, int]
    stages: Tuple[StageSpec, ...]

    @classmethod
    def from_dict(cls, model_dir: Union[str, Path], data: Mapping[str, Any]) -> "Manifest":
        canvas = tuple(int(v) for v in data.get("canvas") or (0, 0))
        return cls(Path(model_dir), data, str(data.get("family", "pose2img")), canvas,
                   tuple(StageSpec.from_dict(s) for s in data["stages"]))

    # the JSON, read-only
    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def config(self) -> Mapping[str, Any]:
        return self.data.get("config") or {}

    @property
    def checkpoint(self) -> Mapping[str, Any]:
        return self.data.get("checkpoint") or {}

    def stage(self, name: str) -> StageSpec:
        for spec in self.stages:
            if spec.name == name:
                return spec
        raise UserError(f"has no stage {name!r}; its stages are {', '.join(s.name for s in self.stages)}",
                        self.dir / MANIFEST)

    def to_dict(self) -> Dict[str, Any]:
        """A deep copy of the JSON, to edit and write back."""
        return json.loads(json.dumps(self.data))


def read_manifest(model_dir: Union[str, Path], verify: bool = True) -> Manifest:
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
    return Manifest.from_dict(model_dir, manifest)


def recorded_files(manifest: Mapping[str, Any]) -> Dict[str, str]:
    """{file: sha256} of every model file the manifest records a hash for: the stage graphs and
    the INT8 graphs, an OpenVINO IR's weights file too (TensorRT plans carry their own record,
    checked by engines.compat)."""
    entries = list(manifest.get("stages", []))
    for key in INT8_KEYS:
        if isinstance(manifest.get(key), dict):
            entries += manifest[key].get("stages", [])
    files = {e["file"]: e["sha256"] for e in entries if isinstance(e, dict) and e.get("file") and e.get("sha256")}
    files.update({e["weights_file"]: e["weights_sha256"] for e in entries    # an OpenVINO IR's .bin
                  if isinstance(e, dict) and e.get("weights_file") and e.get("weights_sha256")})
    return files


def verify_files(model_dir: Union[str, Path], manifest: Mapping[str, Any]) -> None:
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


def stage_specs(manifest: Mapping[str, Any]) -> List[StageSpec]:
    if isinstance(manifest, Manifest):
        return list(manifest.stages)
    return [StageSpec.from_dict(s) for s in manifest["stages"]]


def int8_stage_files(manifest: Mapping[str, Any], key: str = INT8_KEY) -> Optional[Dict[str, str]]:
    """{stage name: file to run at --precision int8}: the INT8 graph where the manifest's ``int8``
    entry (``key``; ``int8_trt`` for TensorRT) has one, else the stage's FP32 file; None when the
    model has no such INT8 graphs."""
    entry = manifest.get(key)
    if not isinstance(entry, dict) or not entry.get("stages"):
        return None
    files = {s["name"]: s["file"] for s in manifest["stages"]}
    files.update({s["name"]: s["file"] for s in entry["stages"]})
    return files
