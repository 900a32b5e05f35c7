"""Stage models on Triton's Python backend: poserender's own engines run inside the server.

``poserender triton --backend python`` writes each stage as::

    NAME_stage/config.pbtxt      backend: "python"; the tensors and batching of the ONNX model
    NAME_stage/1/model.py        MODEL_PY: puts poserender on sys.path, then hands over to StageModel
    NAME_stage/1/<stage>.onnx    the exported graph, byte for byte
    NAME_stage/1/manifest.json   the export's manifest with this stage only, so the engine is built
                                 by ``engines.select.stage_engines`` as ``poserender render`` builds it

The ensemble, the batching choice (per-identity stages batch across requests, per-frame stages
take one identity per request) and the client are the same as with the ONNX Runtime backend.

Two properties of the backend's stub (tritonserver 2.51, ``nvidia-pytriton`` 0.7.0) shape the
code below:

* the stub runs an isolated interpreter: PYTHONPATH is ignored, so its sys.path is that of the
  base installation of the Python it was built for. ``model.py`` prepends the serving
  interpreter's path (``POSERENDER_PYTHONPATH``, set by ``poserender triton-serve``) or, when the
  server was started some other way, the path recorded in ``config.pbtxt`` when it was written;
* the stub's pybind11 predates NumPy 2 and reads NumPy 1's dtype layout: under NumPy 2
  ``Tensor.as_numpy()`` and ``pb_utils.Tensor(name, array)`` see an item size of 0, so inputs
  read as zeros and outputs go out empty, without an error. Tensors cross the boundary by DLPack
  instead (``np.from_dlpack`` in, ``Tensor.from_dlpack`` out), which does not use those structs,
  and :func:`check_tensor_path` refuses to load a model whose tensors would not round-trip.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np

from .contract import ENGINE_PARAMETER, PYTHON_PATH_ENV, PYTHON_PATH_PARAMETER, THREADS_PARAMETER

MODEL_PY = '''\
"""Written by `poserender triton --backend python`: this stage runs poserender's engine
(poserender.triton.python_backend.StageModel) inside Triton's Python backend."""
import json
import os
import sys

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        recorded = config.get("parameters", {}).get("%(parameter)s", {}).get("string_value", "")
        for entry in reversed((os.environ.get("%(env)s") or recorded).split(os.pathsep)):
            if entry and entry not in sys.path:
                sys.path.insert(0, entry)
        from poserender.triton.python_backend import StageModel

        self.stage = StageModel(pb_utils, config, os.path.dirname(os.path.abspath(__file__)))

    def execute(self, requests):
        return self.stage.execute(requests)

    def finalize(self):
        self.stage.finalize()
''' % {"parameter": PYTHON_PATH_PARAMETER, "env": PYTHON_PATH_ENV}


# --- what is written ----------------------------------------------------------------------------

def interpreter_path() -> List[str]:
    """This interpreter's import path (site-packages, an editable checkout), as the stub needs it."""
    return [p for p in sys.path if p and Path(p).is_dir()]


def stage_parameters(engine: str, threads: int) -> Dict[str, str]:
    return {ENGINE_PARAMETER: engine, THREADS_PARAMETER: str(int(threads)),
            PYTHON_PATH_PARAMETER: os.pathsep.join(interpreter_path())}


def write_stage_files(version_dir: Path, model_dir: Path, manifest: Mapping[str, Any],
                      entry: Mapping[str, Any]) -> None:
    """model.py, the stage's graph and a one-stage manifest into ``version_dir`` (``NAME_stage/1``)."""
    shutil.copyfile(model_dir / entry["file"], version_dir / entry["file"])
    one_stage = {**manifest, "stages": [dict(entry)]}
    one_stage.pop("engines", None)                  # TensorRT plans are not served from here
    one_stage.pop("int8", None)
    (version_dir / "manifest.json").write_text(json.dumps(one_stage, indent=2) + "\n")
    (version_dir / "model.py").write_text(MODEL_PY)


# --- what runs inside the server ----------------------------------------------------------------

_USED_CAPSULE = b"used_dltensor"
_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype, _capsule_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
_capsule_set_name = ctypes.pythonapi.PyCapsule_SetName
_capsule_set_name.restype, _capsule_set_name.argtypes = ctypes.c_int, [ctypes.py_object, ctypes.c_char_p]


def to_triton(pb_utils, name: str, array: np.ndarray):
    """A ``pb_utils.Tensor`` holding ``array``, handed over by DLPack.

    The stub takes ownership of the DLPack capsule and renames it ``used_dlpack`` (the DLPack
    convention is ``used_dltensor``); NumPy's capsule destructor then finds neither name and
    prints a ValueError for every tensor. Renaming it to the conventional name afterwards tells
    NumPy the consumer owns the data, which it does."""
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    if _capsule_name(capsule) != b"dltensor":
        _capsule_set_name(capsule, _USED_CAPSULE)
    return tensor


def from_triton(tensor) -> np.ndarray:
    return np.from_dlpack(tensor)


def check_tensor_path(pb_utils) -> None:
    """Send a known array through ``pb_utils.Tensor`` and back; raise when it does not survive."""
    probe = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    back = from_triton(to_triton(pb_utils, "probe", probe))
    if back.shape != probe.shape or not np.array_equal(back, probe):
        raise RuntimeError(f"a tensor does not survive the Python backend's stub (sent {probe.shape} "
                           f"float32, got {back.shape} {back.dtype}); this stub cannot serve poserender")


class StageModel:
    """One stage's engine behind Triton's Python-backend ``execute``.

    Per-identity stages (``max_batch_size`` > 0, every tensor batched) run the requests Triton's
    scheduler hands over together, concatenated up to the stage's batch range; per-frame stages
    run one request (one identity, a batch of frames) at a time. A request that fails gets an
    error response; the others in the same call are still answered."""

    def __init__(self, pb_utils, config: Mapping[str, Any], version_dir: str):
        from ..engines.select import stage_engines
        from ..manifest import read_manifest

        self.pb = pb_utils
        check_tensor_path(pb_utils)
        parameters = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        threads = int(parameters.get(THREADS_PARAMETER) or 0) or None
        folder = Path(version_dir)
        self.backend, engines = stage_engines(folder, read_manifest(folder), parameters.get(ENGINE_PARAMETER, "ort-cpu"),
                                              threads=threads)
        self.engine = engines[0].activate()
        self.spec = self.engine.spec
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.outputs = [o["name"] for o in config["output"]]

    def _feed(self, request) -> Dict[str, np.ndarray]:
        feed = {}
        for t in self.spec.inputs:
            tensor = self.pb.get_input_tensor_by_name(request, t.name)
            if tensor is None:
                raise ValueError(f"stage {self.spec.name!r}: the request has no input {t.name!r}")
            feed[t.name] = from_triton(tensor)
            if t.shape[0] == "batch" and not self.spec.min_batch <= feed[t.name].shape[0] <= self.spec.max_batch:
                raise ValueError(f"input {t.name!r} holds {feed[t.name].shape[0]} items; stage {self.spec.name!r} "
                                 f"takes {self.spec.min_batch} to {self.spec.max_batch} per request")
        return feed

    def _run(self, feeds: Sequence[Dict[str, np.ndarray]]) -> List[Dict[str, np.ndarray]]:
        """Outputs per feed; feeds of a batching stage are run as one concatenated batch."""
        if len(feeds) == 1:
            return [self.engine.infer(feeds[0])]
        sizes = [len(next(iter(f.values()))) for f in feeds]
        merged = {n: np.concatenate([f[n] for f in feeds]) for n in feeds[0]}
        out = self.engine.infer(merged)
        bounds = np.cumsum([0] + sizes)
        return [{n: v[a:b] for n, v in out.items()} for a, b in zip(bounds[:-1], bounds[1:])]

    def _groups(self, feeds: List[Any]) -> List[List[int]]:
        """Indices of the requests run together: consecutive good feeds up to the batch range."""
        groups: List[List[int]] = []
        size = 0
        for i, feed in enumerate(feeds):
            if isinstance(feed, Exception):
                continue
            n = len(next(iter(feed.values())))
            if not self.batching or not groups or size + n > self.spec.max_batch:
                groups.append([])
                size = 0
            groups[-1].append(i)
            size += n
        return groups

    def _error(self, exc: BaseException):
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(
            f"poserender stage {self.spec.name!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"))

    def execute(self, requests) -> list:
        feeds: List[Any] = []
        for request in requests:
            try:
                feeds.append(self._feed(request))
            except Exception as exc:          # answered as an error response below
                feeds.append(exc)
        responses: List[Any] = [self._error(f) if isinstance(f, Exception) else None for f in feeds]
        for group in self._groups(feeds):
            try:
                outputs = self._run([feeds[i] for i in group])
                for i, out in zip(group, outputs):
                    responses[i] = self.pb.InferenceResponse(
                        output_tensors=[to_triton(self.pb, n, out[n]) for n in self.outputs])
            except Exception as exc:
                for i in group:
                    responses[i] = self._error(exc)
        return responses

    def finalize(self) -> None:
        self.engine.deactivate()
