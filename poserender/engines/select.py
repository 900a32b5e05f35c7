"""Pick a backend by name and build one engine per stage of an exported model directory."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import UserError
from ..manifest import int8_stage_files, stage_specs
from . import ort_engine, torch_engine
from .base import Engine

#: every backend name; the GPU ones (after "torch") take a device index
BACKENDS = ("auto", "ort-cpu", "torch", "torch-cuda", "ort-cuda", "ort-trt", "trt")
GPU_BACKENDS = ("torch-cuda", "ort-cuda", "ort-trt", "trt")
#: --precision values: fp16/bf16 on the GPU backends, int8 (calibrated QDQ graphs) on ort-cpu
PRECISIONS = (None, "fp32", "fp16", "bf16", "int8")


def _pose2img_torch_stage(manifest: Dict[str, Any], stage_name: str):
    from ..config import Pose2ImgConfig
    from ..models.checkpoint import load_generator
    from ..models.pose2img import FrameStage, Pose2ImgGeometry, SourceStage

    ckpt = manifest.get("checkpoint", {}).get("path")
    if not ckpt or not Path(ckpt).is_file():
        raise UserError(f"--backend torch needs the checkpoint this model was exported from "
                        f"({ckpt or 'not recorded'}), and it is not there; use --backend ort-cpu")
    generator, _ = load_generator(ckpt)
    geometry = Pose2ImgGeometry.from_config(Pose2ImgConfig.from_dict(manifest["config"]), manifest["warp_mode"])
    return (SourceStage if stage_name == "source" else FrameStage)(generator, geometry)


def _psc_torch_stage(manifest: Dict[str, Any], stage_name: str):
    from ..models.psc.checkpoint import is_psc_checkpoint_dir, load_psc_nets
    from ..models.psc.stages import psc_stages

    folder = manifest.get("checkpoint", {}).get("path")
    if not folder or not is_psc_checkpoint_dir(folder):
        raise UserError(f"--backend torch needs the PSC checkpoint folder this model was exported from "
                        f"({folder or 'not recorded'}, with pm.pth/aa.pth/ct.pth), and it is not there; "
                        "use --backend ort-cpu")
    pm, aa, ct, _ = load_psc_nets(folder, manifest.get("bn_stats", "sample"))
    h, w = manifest["canvas"]
    return dict((spec.name, module) for spec, module in
                psc_stages(pm, aa, ct, h, w, manifest["config"].get("sigma", 100.0)))[stage_name]


#: manifest "family" -> function(manifest, stage_name) -> the torch module of that stage
TORCH_STAGE_BUILDERS: Dict[str, Callable[[Dict[str, Any], str], Any]] = {
    "pose2img": _pose2img_torch_stage,
    "psc": _psc_torch_stage,
}


def _torch_stage_loader(manifest: Dict[str, Any], stage_name: str):
    family = manifest.get("family", "pose2img")
    if family not in TORCH_STAGE_BUILDERS:
        raise UserError(f"--backend torch does not know model family {family!r}; use --backend ort-cpu")
    return lambda: TORCH_STAGE_BUILDERS[family](manifest, stage_name)


def resolve_backend(name: str) -> str:
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if name == "auto":
        if ort_engine.is_available():
            return "ort-cpu"
        if torch_engine.is_available():
            return "torch"
        raise UserError("no usable backend: install onnxruntime (pip install onnxruntime) or torch")
    if name in GPU_BACKENDS:
        from ..doctor import backend_availability

        usable, reason = backend_availability()[name]
        if not usable:
            raise UserError(f"backend {name} is not usable here: {reason}; run `poserender doctor`")
        return name
    available = {"ort-cpu": ort_engine.is_available, "torch": torch_engine.is_available}[name]()
    if not available:
        raise UserError(f"backend {name} is not usable here ({'onnxruntime' if name == 'ort-cpu' else 'torch'} "
                        "is not installed); run `poserender doctor`")
    return name


def stage_engines(model_dir: Path, manifest: Dict[str, Any], backend: str, device: Optional[str] = None,
                  threads: Optional[int] = None, precision: Optional[str] = None,
                  cuda_graphs: bool = False) -> Tuple[str, List[Engine]]:
    """(resolved backend name, engines in stage order).

    ``device`` is where the engines run: None or "cpu" for the CPU backends; GPU backends take a
    device index as a string, e.g. "0" (default "0"). ``threads`` caps ONNX Runtime's intra-op
    threads (for several CPU workers side by side). ``precision`` (fp32/fp16/bf16) applies to
    torch-cuda, ort-trt and trt (default: fp32, or for trt the precision of the last build);
    int8 to ort-cpu, which then runs the model's calibrated INT8 graphs (manifest ``int8``).
    ``cuda_graphs`` to torch-cuda and trt.
    """
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}; expected one of {', '.join(p for p in PRECISIONS if p)}")
    backend = resolve_backend(backend)
    stage_files = {spec.name: spec.file for spec in stage_specs(manifest)}
    if precision == "int8" and backend != "trt":          # trt: the int8 plans of `build --precision int8`
        stage_files = _int8_stage_files(Path(model_dir), manifest, backend)
    elif backend not in GPU_BACKENDS and precision not in (None, "fp32"):
        raise UserError(f"backend {backend} runs in fp32 or int8 (ort-cpu); --precision {precision} "
                        f"needs a GPU backend ({', '.join(b for b in GPU_BACKENDS if b != 'ort-cuda')})")
    if backend not in GPU_BACKENDS:
        if device not in (None, "cpu"):
            raise UserError(f"backend {backend} runs on the CPU; device {device!r} needs a GPU backend "
                            f"({', '.join(GPU_BACKENDS)})")
    elif device is None:
        device = "0"
    elif not str(device).isdigit():
        raise UserError(f"backend {backend} needs a GPU index as device, e.g. 0; got {device!r}")
    engines: List[Engine] = []
    for spec in stage_specs(manifest):
        if backend == "ort-cpu":
            engines.append(ort_engine.OrtEngine(spec, Path(model_dir) / stage_files[spec.name], threads=threads))
        elif backend == "torch":
            engines.append(torch_engine.TorchEngine(spec, _torch_stage_loader(manifest, spec.name)))
        else:
            engines.append(_gpu_engine(backend, spec, Path(model_dir), manifest, int(device), precision, cuda_graphs))
    return backend, engines


def _int8_stage_files(model_dir: Path, manifest: Dict[str, Any], backend: str) -> Dict[str, str]:
    """The files ``--precision int8`` runs; a clear error when the model has none or the backend
    cannot run them (the graphs are QDQ with uint8 activations: ONNX Runtime CPU kernels)."""
    if backend != "ort-cpu":
        why = (" (TensorRT: export with --int8-target trt|both, `poserender build --precision int8`, then "
               "--backend trt)") if "trt" in backend else ""
        raise UserError(f"--precision int8 runs the calibrated INT8 graphs (QDQ, uint8 activations) on ort-cpu; "
                        f"backend {backend} cannot{why}")
    files = int8_stage_files(manifest)
    if files is None:
        identity = ("--source-parsing PARSING" if manifest.get("family") == "psc" else "--source-keypoints KP")
        raise UserError(f"has no INT8 graphs; export with --precision int8 --calibrate KEYPOINTS --source IMAGE "
                        f"{identity} (see `poserender export --help`)", model_dir)
    for name, file in files.items():
        if not (model_dir / file).is_file():
            raise UserError(f"INT8 graph {file!r} of stage {name!r} is missing; re-export with --precision int8",
                            model_dir)
    return files


def _gpu_engine(backend: str, spec, model_dir: Path, manifest: Dict[str, Any], device: int,
                precision: Optional[str], cuda_graphs: bool) -> Engine:
    if backend == "torch-cuda":
        return torch_engine.TorchEngine(spec, _torch_stage_loader(manifest, spec.name), device=f"cuda:{device}",
                                        precision=precision or "fp32", cuda_graphs=cuda_graphs)
    if backend == "ort-cuda":
        if precision not in (None, "fp32"):
            raise UserError(f"ort-cuda runs the fp32 graph; --precision {precision} needs ort-trt, trt or torch-cuda")
        return ort_engine.OrtEngine(spec, model_dir / spec.file, providers=ort_engine.cuda_providers(device),
                                    device_id=device)
    if backend == "ort-trt":
        return ort_engine.OrtEngine(spec, model_dir / spec.file, device_id=device,
                                    providers=ort_engine.tensorrt_providers(device, model_dir, precision or "fp32", spec))
    from .trt_engine import TrtEngine

    precision = precision or (manifest.get("build") or {}).get("precision")
    return TrtEngine(spec, model_dir, manifest, device, precision, cuda_graphs)
