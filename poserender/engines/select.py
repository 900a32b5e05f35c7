"""Build one engine per stage of an exported model on a backend of the registry (registry.py).

:func:`stage_engines` checks the backend, device and precision together (one line for any
mismatch, before anything heavy is loaded), picks the file each stage runs (the FP32 graph, or
the calibrated INT8 graph at ``int8`` on ONNX Runtime CPU), and calls the backend's factory.
Engines are lazy: nothing is loaded until ``activate()``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..errors import UserError
from ..manifest import int8_stage_files, stage_specs
from . import registry
from .base import Engine
from .machine import Facts

#: --precision values: every precision of some backend of the registry (None: not given)
PRECISIONS = (None,) + registry.all_precisions()
TorchStages = Callable[[Mapping[str, Any], str], Any]


def resolve_backend(name: str) -> str:
    """The backend a --backend value names (auto: the registry's rule); one line if unusable."""
    return registry.resolve(name)[0]


def _check_precision(backend: str, precision: Optional[str], facts: Optional[Facts] = None) -> None:
    if precision in (None, "fp32"):
        return
    if precision in registry.BACKENDS[backend].precisions:
        why = registry.refusal(backend, precision, facts)       # e.g. BF16 on a CPU without it
        if why:
            raise UserError(why)
        return
    able = [n for n, b in registry.BACKENDS.items() if precision in b.precisions]
    if precision == "int8":
        why = (" (TensorRT: export with --int8-target trt|both, `poserender build --precision int8`, then "
               "--backend trt)") if "trt" in backend else ""
        graphs = [n for n in able if not registry.is_gpu(n)]      # the GPU ones run int8 plans of their own
        raise UserError(f"--precision int8 runs the calibrated INT8 graphs on {', '.join(graphs)}; "
                        f"backend {backend} cannot{why}")
    raise UserError(f"backend {backend} runs {', '.join(registry.BACKENDS[backend].precisions)}; --precision "
                    f"{precision} needs one of {', '.join(able)}")


def _choose(model_dir: Path, backend: str, precision: Optional[str], facts: Optional[Facts]) -> registry.Choice:
    """The backend (and, for a measured auto pick, the precision) a --backend value gives."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}; expected one of {', '.join(p for p in PRECISIONS if p)}")
    if backend == registry.AUTO:
        return registry.pick_auto(facts, model_dir, precision)
    return registry.Choice(registry.resolve(backend, facts)[0], precision, None)


def device_index(backend: str, device: Optional[str]) -> Optional[int]:
    if not registry.is_gpu(backend):
        if device not in (None, "cpu"):
            raise UserError(f"backend {backend} runs on the CPU; device {device!r} needs a GPU backend "
                            f"({', '.join(registry.gpu_names())})")
        return None
    if device is None:
        return 0
    if not str(device).isdigit():
        raise UserError(f"backend {backend} needs a GPU index as device, e.g. 0; got {device!r}")
    return int(device)


def check_request(model_dir: Path, manifest: Mapping[str, Any], backend: str, precision: Optional[str] = None,
                  devices: Tuple[str, ...] = (), facts: Optional[Facts] = None) -> registry.Choice:
    """Check a backend, precision and device list together before anything is built or written:
    (the backend's name, the precision to run, what ``auto`` chose and why or None). One line for
    any mismatch."""
    choice = _choose(Path(model_dir), backend, precision, facts)
    _check_precision(choice.backend, choice.precision, facts)
    for device in dict.fromkeys(devices):
        device_index(choice.backend, device)
    _stage_files(choice.backend, Path(model_dir), manifest, choice.precision)
    return choice


def stage_engines(model_dir: Path, manifest: Mapping[str, Any], backend: str, device: Optional[str] = None,
                  threads: Optional[int] = None, precision: Optional[str] = None, cuda_graphs: bool = False,
                  torch_stages: Optional[TorchStages] = None, facts: Optional[Facts] = None
                  ) -> Tuple[str, List[Engine]]:
    """(resolved backend name, engines in stage order).

    ``device`` is where the engines run: None or "cpu" for the CPU backends; GPU backends take a
    device index as a string, e.g. "0" (default "0"). ``threads`` caps the CPU runtimes' threads
    (for several CPU workers side by side). ``precision`` as the backend's registry entry allows
    (int8 runs the model's calibrated INT8 graphs; ``auto`` may pick the precision it measured).
    ``torch_stages(manifest, name)`` builds a stage's torch module for the torch backends (the
    family's ``torch_stage``). ``facts``: the machine (default: this one's).
    """
    choice = _choose(Path(model_dir), backend, precision, facts)
    backend, precision = choice.backend, choice.precision
    _check_precision(backend, precision, facts)
    index = device_index(backend, device)
    files = _stage_files(backend, Path(model_dir), manifest, precision)
    engines: List[Engine] = []
    for spec in stage_specs(manifest):
        loader = None if torch_stages is None else (lambda name=spec.name: torch_stages(manifest, name))
        request = registry.EngineRequest(spec, Path(model_dir) / files[spec.name], Path(model_dir), manifest, index,
                                         threads, precision, cuda_graphs, loader)
        engines.append(registry.BACKENDS[backend].factory(request))
    return backend, engines


def _stage_files(backend: str, model_dir: Path, manifest: Mapping[str, Any], precision: Optional[str]) -> Dict[str, str]:
    """{stage: file} the backend runs at ``precision``: its entry's choice, else the FP32 graphs
    (at int8 the calibrated QDQ graphs); one line when the model has none."""
    entry = registry.BACKENDS[backend]
    if entry.stage_files is not None:
        return entry.stage_files(model_dir, manifest, precision)
    if precision == "int8":
        return _int8_stage_files(model_dir, manifest)
    return {spec.name: spec.file for spec in stage_specs(manifest)}


def _int8_stage_files(model_dir: Path, manifest: Mapping[str, Any]) -> Dict[str, str]:
    """The files ``--precision int8`` runs; a clear error when the model has none or one is missing."""
    files = int8_stage_files(manifest)
    if files is None:
        raise UserError("has no INT8 graphs; export with --precision int8 --calibrate KEYPOINTS and the identity "
                        "(--source IMAGE and its keypoints or parsing; see `poserender export --help`)", model_dir)
    for name, file in files.items():
        if not (model_dir / file).is_file():
            raise UserError(f"INT8 graph {file!r} of stage {name!r} is missing; re-export with --precision int8",
                            model_dir)
    return files
