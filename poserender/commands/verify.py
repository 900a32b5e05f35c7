"""`poserender verify`: compare backends per stage and end to end; results go into manifest.json.

Per stage, every backend gets the same inputs (the reference's outputs of the earlier stages),
so an error is attributed to the stage that made it; end to end, each backend feeds itself,
so errors compound as they would in a render. Reported per output: max abs error, PSNR,
NaN/inf count. FP32 backends must pass the export tolerances (export.verify.passes);
reduced precision must be finite with PSNR >= 35 dB on the final frames.
"""
from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import click

from ..errors import UserError
from .common import log, user_errors

REDUCED_PRECISION_MIN_PSNR_DB = 35.0


def _verdict(report: Dict[str, Dict[str, float]], precision: str) -> bool:
    from ..export.quality import QualityGate
    from ..export.verify import passes

    if precision == "fp32":
        return passes(report)
    gate = QualityGate(min_psnr_db=REDUCED_PRECISION_MIN_PSNR_DB)     # the gate INT8 exports pass too
    return all(gate.passes(entry) for entry in report.values())


def _run_chain(engines, manifest, own: bool, reference_outputs=None):
    """Outputs of every stage; with ``own`` each stage gets this chain's outputs, else the reference's."""
    from ..export.verify import stage_feeds

    outputs: Dict[str, Any] = {}
    per_stage = []
    for index, engine in enumerate(engines):
        earlier = outputs if own or reference_outputs is None else reference_outputs
        out = engine.infer(stage_feeds(manifest, index, earlier))
        per_stage.append(out)
        outputs = {**outputs, **out}
    return per_stage


def verify_model(model_dir: Path, backends: Sequence[str], reference: Optional[str] = None,
                 device: Optional[str] = None, precision: Optional[str] = None) -> Dict[str, Any]:
    """Compare ``backends`` with ``reference`` on the family's verification inputs; writes
    ``verification_backends`` into the manifest and raises UserError if one fails."""
    from .. import families
    from ..engines import registry, select
    from ..export.verify import compare_outputs
    from ..manifest import read_manifest, write_json_atomic

    try:
        import torch  # noqa: F401 - the verification inputs are made with torch
    except ImportError:
        raise UserError("poserender verify needs torch: pip install \".[export]\"") from None
    manifest = read_manifest(model_dir)
    torch_stages = families.of(manifest).torch_stage
    for backend in backends:           # an unknown or unusable backend fails before any work
        select.resolve_backend(backend)
    if reference is None:           # torch when the family's checkpoint is still where the export recorded it
        ckpt = manifest.checkpoint.get("path")
        reference = "torch" if ckpt and families.of(manifest).is_checkpoint(Path(ckpt)) else "ort-cpu"
    _, ref_engines = select.stage_engines(model_dir, manifest, reference, torch_stages=torch_stages)
    for engine in ref_engines:
        engine.activate()
    try:
        ref_stages = _run_chain(ref_engines, manifest, own=True)
    finally:
        for engine in ref_engines:
            engine.deactivate()
    ref_outputs = {k: v for out in ref_stages for k, v in out.items()}
    results: Dict[str, Any] = {}
    failed = []
    for backend in backends:
        gpu = registry.is_gpu(backend)
        name, engines = select.stage_engines(model_dir, manifest, backend, device if gpu else None,
                                             precision=precision if gpu else None, torch_stages=torch_stages)
        used = (precision or "fp32") if gpu else "fp32"
        if backend == "trt":
            used = engines[0].precision or "fp32"
        for engine in engines:
            engine.activate()
        try:
            isolated = _run_chain(engines, manifest, own=False, reference_outputs=ref_outputs)
            chained = _run_chain(engines, manifest, own=True)
        finally:
            for engine in engines:
                engine.deactivate()
        stages = {e.spec.name: compare_outputs(ref, got) for e, ref, got in zip(engines, ref_stages, isolated)}
        end_to_end = compare_outputs(ref_stages[-1], chained[-1])
        ok = all(_verdict(r, used) for r in stages.values()) and _verdict(end_to_end, used)
        results[name] = {"precision": used, "device": device if gpu else "cpu", "passed": ok,
                         "stages": stages, "end_to_end": end_to_end}
        for stage, report in list(stages.items()) + [("end to end", end_to_end)]:
            for output, entry in report.items():
                psnr = "inf" if math.isinf(entry["psnr_db"]) else f"{entry['psnr_db']:.1f}"
                log(f"  {name:<10} {stage:<10} {output:<14} max|err| {entry['max_abs_error']:<10.3g} "
                    f"PSNR {psnr:>6} dB  NaN/inf {entry['nonfinite']}")
        if not ok:
            failed.append(name)
    written = manifest.to_dict()
    written["verification_backends"] = {
        "reference": reference, "checked": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "min_psnr_db_reduced_precision": REDUCED_PRECISION_MIN_PSNR_DB, "backends": results}
    write_json_atomic(Path(model_dir) / "manifest.json", written)
    if failed:
        raise UserError(f"{', '.join(failed)} disagree(s) with {reference} beyond tolerance "
                        "(see the table above and verification_backends in manifest.json)", model_dir)
    return written["verification_backends"]


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--backends", default="ort-cpu", show_default=True,
              help="Comma-separated backends to check, e.g. ort-cpu,ort-cuda,trt.")
@click.option("--reference", help="Backend to compare against (default: torch when the checkpoint "
              "is reachable, else ort-cpu).")
@click.option("--device", help="GPU index for the GPU backends (default 0).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]),
              help="Precision for torch-cuda/ort-trt/trt (default: fp32; trt: the built one).")
@user_errors
def verify(model_dir: str, backends: str, reference: Optional[str], device: Optional[str],
           precision: Optional[str]) -> None:
    """Compare backends on MODEL_DIR per stage and end to end (max abs error, PSNR, NaN/inf).

    \b
    poserender verify art/oliver --backends ort-cpu,torch-cuda,trt --precision fp16
    """
    import time

    started = time.perf_counter()
    names = [b.strip() for b in backends.split(",") if b.strip()]
    if not names:
        raise UserError("--backends is empty; expected e.g. ort-cpu or ort-cpu,trt")
    result = verify_model(Path(model_dir), names, reference, device, precision)
    click.echo(f"verified {', '.join(result['backends'])} against {result['reference']}: all within tolerance "
               f"({time.perf_counter() - started:.1f} s)")
