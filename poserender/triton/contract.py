"""What the writer, the checker, the client and the server launcher of a Triton repository agree
on: file and parameter names, Triton's platform and dtype strings, the stage chains of the
ensembles, and the backends a stage model can be served with. Plain data and two small
predicates; it imports nothing from this package, so every module here may import it.
"""
from __future__ import annotations

from typing import Dict

from ..specs import StageSpec

#: the file beside the models that says what was generated from what (read by triton-client)
METADATA = "poserender_triton.json"
FORMAT_VERSION = 1

ONNX_PLATFORM, PLAN_PLATFORM, ENSEMBLE_PLATFORM = "onnxruntime_onnx", "tensorrt_plan", "ensemble"
#: the Triton backend (``backend: "python"``) that runs poserender's own engines in the server
PYTHON_BACKEND = "python"

#: ``poserender triton --backend``: which Triton backend serves the stage models.
#: auto = tensorrt where every listed GPU has a current plan, onnxruntime otherwise.
BACKENDS = ("auto", "onnxruntime", "tensorrt", "python")
#: the earlier ``--engine`` names, still accepted
ENGINE_ALIASES = {"auto": "auto", "onnx": "onnxruntime", "plan": "tensorrt"}
#: poserender engines (``engines.select`` backend names) a Python-backend stage may run; CPU
#: engines that need only the ONNX graph (the torch backend needs the training checkpoint)
PYTHON_ENGINES = ("ort-cpu",)

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8", "int64": "TYPE_INT64"}

#: the ensemble parameter holding the metadata the client needs (family, canvas, config, chain)
CLIENT_PARAMETER = "poserender"
#: Python-backend stage parameters: the engine to run, and where poserender and its packages are
#: (the backend's stub runs an isolated interpreter that ignores PYTHONPATH)
ENGINE_PARAMETER = "poserender_engine"
THREADS_PARAMETER = "poserender_threads"
PYTHON_PATH_PARAMETER = "poserender_python_path"
#: set by ``poserender triton-serve``: the serving interpreter's sys.path, which takes precedence
#: over the path written into the repository
PYTHON_PATH_ENV = "POSERENDER_PYTHONPATH"
#: the wheel that carries tritonserver and its Python backend, and how it is installed
SERVER_WHEEL = "nvidia-pytriton==0.7.0"
SERVER_INSTALL = f'pip install --no-deps "{SERVER_WHEEL}"'


def batchable(spec: StageSpec) -> bool:
    """True when every input and output carries the batch axis first: Triton may merge requests."""
    return all(t.shape and t.shape[0] == "batch" for t in spec.inputs + spec.outputs)


def backend_name(backend: str) -> str:
    """``--backend`` or an old ``--engine`` name -> one of BACKENDS (unknown names pass through)."""
    return ENGINE_ALIASES.get(backend, backend)


def model_names(name: str, stages) -> Dict[str, str]:
    return {stage: f"{name}_{stage}" for stage in stages}
