"""The one export loop: a family's :class:`~poserender.families.ExportPlan` -> a verified model folder.

For every stage, in order: trace the deploy module to ONNX (dynamic batch, checker-clean), run
the reference module with torch and the graph with ONNX Runtime on the stage's verification
inputs, accept or refuse (the family's rule, or the default tolerances), run the
TensorRT-readiness check (recorded, not fatal), and record sha256, sizes and the numbers. The
folder is built under a temporary name beside ``out_dir`` and renamed onto it at the end, so an
interrupted or failed export leaves nothing; the manifest is written last.
"""
from __future__ import annotations

import datetime
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Union

from .. import __version__
from ..engines.placement import PER_FRAME, PER_IDENTITY
from ..errors import UserError
from ..fileio import check_writable, output_error, temp_dir_beside
from ..manifest import FORMAT_VERSION, MANIFEST, sha256_file
from .onnx_export import OPSET, export_stage, publish
from .trt_check import check_onnx
from .verify import compare_outputs, passes, run_onnx, run_torch


def export_model(family, plan, out_dir: Union[str, Path], log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Export, verify and write ``out_dir`` from ``plan`` (of ``family``); returns the manifest."""
    import onnx
    import torch

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise UserError("exists and is not an exported model folder; choose a new or empty -o folder", out_dir)
    check_writable(out_dir, "the exported model")
    work = temp_dir_beside(out_dir)
    try:
        outputs: Dict[str, Dict[str, Any]] = {}
        entries = []
        for stage in plan.stages:
            spec = stage.spec
            started = time.perf_counter()
            feed = stage.feed(outputs)
            log(f"exporting {spec.name} stage to {spec.file} ...")
            first = {t.name: feed[t.name][:1] if t.shape[0] == "batch" else feed[t.name] for t in spec.inputs}
            export_stage(stage.deploy, spec, work / spec.file, first)
            ref = run_torch(stage.reference, spec, feed)
            got = run_onnx(work / spec.file, feed)
            report: Dict[str, Any] = {"outputs": compare_outputs(ref, got)}
            ok, extra = (passes(report["outputs"]), {}) if stage.accept is None else stage.accept(feed, ref, got, report)
            report.update(extra)
            if not ok:
                raise UserError(f"{spec.name} stage: ONNX Runtime disagrees with torch: {report}")
            outputs[spec.name] = ref
            readiness = check_onnx(work / spec.file, spec)   # recorded, not fatal: CPU backends do not need it
            log(f"  {readiness.summary()}")
            batch = max(int(feed[t.name].shape[0]) for t in spec.inputs if t.shape and t.shape[0] == "batch")
            runs = PER_IDENTITY if spec.name in family.identity_stages else PER_FRAME
            # the family's INT8 trunk: what INT8 quantizes and reduced-precision backends (ov-cpu bf16) reduce
            trunk = {"trunk": list(family.int8.trunk)} if family.int8 and family.int8.stage == spec.name else {}
            entries.append({**spec.to_dict(), "runs": runs, **trunk, "sha256": sha256_file(work / spec.file),
                            "bytes": (work / spec.file).stat().st_size,
                            "tensorrt_readiness": readiness.to_dict(),
                            "verification": {"backend": "ort-cpu", "batch": batch, **report},
                            "export_seconds": round(time.perf_counter() - started, 2)})
            log(f"  {spec.name}: verified against torch, " + ", ".join(
                f"{k} max|err| {v['max_abs_error']:.2g}" for k, v in report["outputs"].items()))
        manifest = {"family": family.name, "format_version": FORMAT_VERSION, "poserender": __version__,
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    **plan.manifest, "opset": OPSET,
                    "versions": {"torch": torch.__version__, "onnx": onnx.__version__}, "stages": entries}
        if plan.finish is not None:
            plan.finish(manifest, work)
        return publish(work, out_dir, manifest)
    except OSError as exc:     # disk full, ulimit -f, ...: nothing is left behind
        raise output_error(exc, out_dir, "the exported model") from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def export_key(family, checkpoint: Union[str, Path], options: Dict[str, Any]) -> str:
    """What identifies an export: the family, the checkpoint's content and the export options
    (the checkpoint cache is keyed by it, and an export records it: ``export_key``)."""
    import hashlib

    parts = [family.name, __version__, *map(str, family.cache_key(Path(checkpoint), options))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def export_checkpoint(family, checkpoint: Union[str, Path], out_dir: Union[str, Path], options: Dict[str, Any],
                      log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Load ``checkpoint`` through ``family`` (with its export ``options``) and export it."""
    family.check_export_options(options)
    plan = family.export_plan(Path(checkpoint), options, log)      # the checkpoint is read and checked first
    log(f"exporting {checkpoint} to {out_dir}")
    plan.manifest["export_key"] = export_key(family, checkpoint, options)
    return export_model(family, plan, out_dir, log)
