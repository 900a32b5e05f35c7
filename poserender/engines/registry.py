"""Every backend in one place: a plain dict of :class:`Backend` entries.

An entry says what the backend is called, whether it runs on the CPU or a GPU, which precisions
it runs, how to tell whether this machine can use it (``probe(facts) -> (usable, reason)``, read
from engines.machine.Facts), and how to build one stage's engine (``factory``). ``poserender
doctor`` formats the probes; ``render``, ``bench``, ``demo``, ``build``, ``verify`` and
``triton`` resolve names through :func:`resolve` and build engines through
engines.select.stage_engines, which calls the factories. A new backend is one module with its
Engine class plus one entry here.

``auto`` follows one rule everywhere (:func:`pick_auto`):

1. measured: when the model folder has a ``probe.json`` entry for this host (``poserender tune``,
   engines/autopick.py), the fastest (backend, precision) of it that passed the quality gate and
   still runs here (at the asked precision, when one was asked), with its numbers as the reason;
2. otherwise the first usable of ``AUTO_ORDER`` (ONNX Runtime on CUDA, then on the CPU, then
   torch), with the reason the ones before it were passed over (and, for a model, how to measure).

Every command reports the choice (render's summary: ``backend auto: ...``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

from ..errors import UserError
from . import autopick, ov_engine
from .machine import Facts, _tensorrt_libraries, ort_distributions

Probe = Tuple[bool, str]
CPU, GPU = "cpu", "gpu"


@dataclasses.dataclass(frozen=True)
class EngineRequest:
    """What a factory needs to build the engine of one stage."""

    spec: Any                       # StageSpec
    file: Path                      # the graph to run (the precision's file)
    model_dir: Path
    manifest: Mapping[str, Any]
    device: Optional[int]           # GPU index, None on the CPU
    threads: Optional[int]
    precision: Optional[str]
    cuda_graphs: bool
    torch_stage: Optional[Callable[[], Any]]    # builds the stage's torch module (the family's)


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    device: str                                  # CPU or GPU
    precisions: Tuple[str, ...]                  # what --precision may ask of it ("fp32" first)
    probe: Callable[[Facts], Probe]
    factory: Callable[[EngineRequest], Any]
    summary: str
    #: why this machine cannot run a precision the backend has (None: it can), e.g. BF16 without the ISA
    refuse: Optional[Callable[[str, Facts], Optional[str]]] = None
    #: {stage: graph file} a precision runs, one line when the model has none (default: the FP32
    #: graphs; at int8 the calibrated QDQ graphs of the manifest's ``int8`` entry)
    stage_files: Optional[Callable[[Path, Mapping[str, Any], Optional[str]], Dict[str, str]]] = None


# -- probes ---------------------------------------------------------------------------------------

def _torch_cpu(facts: Facts) -> Probe:
    info = facts.package("torch")
    return (False, f"torch {info['error']}") if info["version"] is None else (True, f"torch {info['version']} on CPU")


def _torch_cuda(facts: Facts) -> Probe:
    info = facts.package("torch")
    if info["version"] is None:
        return False, f"torch {info['error']}"
    if not info.get("cuda_build"):
        return False, f"torch {info['version']} is a CPU-only build"
    if not info.get("cuda_available"):
        return False, f"no CUDA device visible to torch (built with CUDA {info['cuda_build']})"
    return True, f"{len(info['devices'])} CUDA device(s)"


def _ort(backend: str, provider: str) -> Callable[[Facts], Probe]:
    def probe(facts: Facts) -> Probe:
        info = facts.package("onnxruntime")
        if info["version"] is None:
            return False, f"onnxruntime {info['error']}"
        if provider not in (info.get("providers") or []):
            hint = "" if backend == "ort-cpu" else " (install onnxruntime-gpu)"
            if backend != "ort-cpu" and len(ort_distributions()) > 1:
                hint = (" (onnxruntime and onnxruntime-gpu are both installed and shadow each other: "
                        "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu)")
            return False, f"{provider} not in onnxruntime providers{hint}"
        if backend != "ort-cpu" and facts.gpus == 0:
            return False, facts.no_gpu
        if backend == "ort-trt" and not _tensorrt_libraries(facts.package("tensorrt")):
            return False, "TensorRT libraries (libnvinfer) not found"
        return True, provider + ("" if backend == "ort-cpu" else f", {facts.gpus} GPU(s)")
    return probe


def _trt(facts: Facts) -> Probe:
    trt, pycuda = facts.package("tensorrt"), facts.package("pycuda")
    if trt["version"] is None:
        return False, f"tensorrt {trt['error']}"
    if pycuda["version"] is None:
        return False, f"pycuda {pycuda['error']}"
    if facts.gpus == 0:
        return False, facts.no_gpu
    return True, f"TensorRT {trt['version']}, {facts.gpus} GPU(s)"


# -- factories ------------------------------------------------------------------------------------

def _ort_cpu_engine(r: EngineRequest):
    from .ort_engine import OrtEngine

    return OrtEngine(r.spec, r.file, threads=r.threads)


def _ort_cuda_engine(r: EngineRequest):
    from .ort_engine import OrtEngine, cuda_providers

    return OrtEngine(r.spec, r.file, providers=cuda_providers(r.device), device_id=r.device)


def _ort_trt_engine(r: EngineRequest):
    from .ort_engine import OrtEngine, tensorrt_providers

    return OrtEngine(r.spec, r.file, device_id=r.device,
                     providers=tensorrt_providers(r.device, r.model_dir, r.precision or "fp32", r.spec))


def _torch_engine(r: EngineRequest):
    from .torch_engine import TorchEngine

    if r.torch_stage is None:
        raise UserError("--backend torch needs the model family's torch stages; none were given")
    if r.device is None:
        return TorchEngine(r.spec, r.torch_stage)
    return TorchEngine(r.spec, r.torch_stage, device=f"cuda:{r.device}", precision=r.precision or "fp32",
                       cuda_graphs=r.cuda_graphs)


def _trt_engine(r: EngineRequest):
    from .trt_engine import TrtEngine

    precision = r.precision or (r.manifest.get("build") or {}).get("precision")
    return TrtEngine(r.spec, r.model_dir, r.manifest, r.device, precision, r.cuda_graphs)


def _fp32_files(model_dir: Path, manifest: Mapping[str, Any], precision: Optional[str]) -> Dict[str, str]:
    """The FP32 graphs whatever the precision (TensorRT finds its plans, int8 ones too, itself)."""
    return {s["name"]: s["file"] for s in manifest["stages"]}


#: name -> backend; the order is doctor's and bench's
BACKENDS: Dict[str, Backend] = {b.name: b for b in (
    Backend("torch", CPU, ("fp32",), _torch_cpu, _torch_engine, "PyTorch eager on the CPU (the reference)"),
    Backend("torch-cuda", GPU, ("fp32", "fp16", "bf16"), _torch_cuda, _torch_engine,
            "PyTorch eager on a GPU, optional CUDA graphs"),
    Backend("ort-cpu", CPU, ("fp32", "int8"), _ort("ort-cpu", "CPUExecutionProvider"), _ort_cpu_engine,
            "ONNX Runtime on the CPU; int8: the calibrated QDQ graphs"),
    Backend("ov-cpu", CPU, ov_engine.PRECISIONS, ov_engine.probe, ov_engine.engine,
            "OpenVINO on x86 CPUs (extra .[openvino]): bf16 in the trunk with AVX512_BF16/AMX, int8: the faster "
            "of the QDQ and NNCF graphs", refuse=ov_engine.refuse, stage_files=ov_engine.stage_files),
    Backend("ort-cuda", GPU, ("fp32",), _ort("ort-cuda", "CUDAExecutionProvider"), _ort_cuda_engine,
            "ONNX Runtime's CUDA provider, IO binding"),
    Backend("ort-trt", GPU, ("fp32", "fp16", "bf16"), _ort("ort-trt", "TensorrtExecutionProvider"), _ort_trt_engine,
            "ONNX Runtime's TensorRT provider"),
    Backend("trt", GPU, ("fp32", "fp16", "bf16", "int8"), _trt, _trt_engine,
            "native TensorRT plans from `poserender build`", stage_files=_fp32_files),
)}
AUTO = "auto"
#: ``auto`` takes the first usable of these
AUTO_ORDER = ("ort-cuda", "ort-cpu", "torch")


def names(with_auto: bool = False) -> Tuple[str, ...]:
    return ((AUTO,) if with_auto else ()) + tuple(BACKENDS)


def gpu_names() -> Tuple[str, ...]:
    return tuple(n for n, b in BACKENDS.items() if b.device == GPU)


def is_gpu(name: str) -> bool:
    return name in BACKENDS and BACKENDS[name].device == GPU


def availability(facts: Optional[Facts] = None) -> Dict[str, Probe]:
    """{backend: (usable, reason)} for every entry; the reason says why not, or what."""
    facts = facts or Facts()
    return {name: backend.probe(facts) for name, backend in BACKENDS.items()}


def all_precisions() -> Tuple[str, ...]:
    """Every precision some backend runs, fp32 first (what --precision accepts at all)."""
    found = [p for b in BACKENDS.values() for p in b.precisions]
    return tuple(dict.fromkeys(["fp32"] + found))


def refusal(name: str, precision: Optional[str], facts: Optional[Facts] = None) -> Optional[str]:
    """Why backend ``name`` cannot run ``precision`` on this machine (None: it can)."""
    backend = BACKENDS[name]
    if precision in (None, "fp32"):
        return None
    if precision not in backend.precisions:
        return f"backend {name} runs {', '.join(backend.precisions)}"
    return None if backend.refuse is None else backend.refuse(precision, facts or Facts())


class Choice(NamedTuple):
    """What ``auto`` chose: the backend, the precision (None: as asked) and why."""

    backend: str
    precision: Optional[str]
    why: str


def pick_auto(facts: Optional[Facts] = None, model_dir: Optional[Path] = None,
              precision: Optional[str] = None) -> Choice:
    """The auto rule (module doc): the measured pick of ``model_dir``'s probe.json for this host,
    else the first usable of AUTO_ORDER and why the ones before it were not."""
    facts = facts or Facts()
    note = ""
    if model_dir is not None:
        def usable(name: str, at: str) -> bool:
            return name in BACKENDS and BACKENDS[name].probe(facts)[0] and refusal(name, at, facts) is None

        found, note = autopick.measured_pick(Path(model_dir), precision, usable)
        if found is not None:
            return Choice(*found)
    passed = []
    for name in AUTO_ORDER:
        usable_here, reason = BACKENDS[name].probe(facts)
        if usable_here:
            why = f"auto: {name}" + (f" ({'; '.join(passed + ([note] if note else []))})" if passed or note else "")
            return Choice(name, precision, why)
        passed.append(f"{name} not usable: {reason}")
    raise UserError("no usable backend: install onnxruntime (pip install onnxruntime) or torch; "
                    f"{'; '.join(passed)}")


def resolve(name: str, facts: Optional[Facts] = None) -> Tuple[str, Optional[str]]:
    """(backend, what auto chose and why, or None) for a --backend value; an unknown name or one
    this machine cannot run is one line naming the known ones / the reason."""
    if name == AUTO:
        choice = pick_auto(facts)
        return choice.backend, choice.why
    if name not in BACKENDS:
        import difflib

        close = difflib.get_close_matches(name, list(BACKENDS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown backend {name!r}{hint}; expected one of {', '.join(names(with_auto=True))}")
    usable, reason = BACKENDS[name].probe(facts or Facts())
    if not usable:
        raise UserError(f"backend {name} is not usable here: {reason}; run `poserender doctor`")
    return name, None
