"""`poserender tune`: measure every backend and precision on this host for `render --backend auto`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..errors import UserError
from .common import log, user_errors


@click.command("tune")
@click.argument("model", type=click.Path())
@click.option("--keypoints", type=click.Path(), help="Target poses to measure on, read as render reads them "
              "(default: the ones the model's INT8 export calibrated on), e.g. varying_tmplt.npz.")
@click.option("--source", type=click.Path(), help="The identity's image (default: the INT8 export's).")
@click.option("--source-keypoints", type=click.Path(), help="pose2img: its keypoints (.npy 3x137 or .json).")
@click.option("--source-parsing", type=click.Path(), help="psc: its parsing (S0 label PNG).")
@click.option("--backend", "backends", default="all", show_default=True,
              help="Comma-separated backends to measure (ort-cpu fp32, the quality reference, always is), or all.")
@click.option("--frames", default=8, show_default=True, help="Held-out frames measured (the INT8 export's gate "
              "frames when it has them, never its calibration frames; else the sequence's tail).")
@click.option("--batch", default=4, show_default=True, help="Frames per call (render's default batch).")
@click.option("--rounds", default=3, show_default=True, help="Timed calls per candidate, alternated.")
@click.option("--threads", type=int, help="CPU threads per engine (default: the usable cores).")
@click.option("--gate-psnr", default=35.0, show_default=True, help="Quality gate vs ONNX Runtime FP32 (dB).")
@click.option("--gate-ssim", type=float, help="Also refuse below this SSIM (e.g. 0.95).")
@user_errors
def tune(model: str, keypoints: Optional[str], source: Optional[str], source_keypoints: Optional[str],
         source_parsing: Optional[str], backends: str, frames: int, batch: int, rounds: int, threads: Optional[int],
         gate_psnr: float, gate_ssim: Optional[float]) -> None:
    """Measure MODEL's per-frame stages on every usable backend and precision here; record it in
    MODEL/probe.json (this host's entry) for `render --backend auto`, which then runs the fastest
    candidate that passed the quality gate on this host and says so.

    \b
    poserender tune art/oliver                      # poses and identity from the INT8 export's record
    poserender tune art/oliver --keypoints poses.npz --source img.jpg --source-keypoints kp.npy
    """
    import os

    from .. import families
    from ..bench.grid import parse_backends
    from ..bench.inputs import load_inputs
    from ..bench.tune import held_out, measure
    from ..engines.registry import pick_auto
    from ..export.quality import QualityGate
    from ..manifest import read_manifest

    if frames < 1 or batch < 1 or rounds < 1:
        raise UserError(f"--frames {frames}, --batch {batch}, --rounds {rounds}: expected positive numbers")
    try:
        gate = QualityGate(gate_psnr, gate_ssim)
    except ValueError as exc:
        raise UserError(f"--gate-psnr/--gate-ssim: {exc}") from None
    model_dir = Path(model)
    manifest = read_manifest(model_dir)
    family = families.of(manifest)
    chosen = parse_backends(backends)
    recorded = ((manifest.get("int8") or {}).get("calibration") or {}).get("inputs") or {}
    given = {"source": source, "source_keypoints": source_keypoints, "source_parsing": source_parsing}
    identity = {i.key: given[i.key] or recorded.get("source_image" if i.key == "source" else i.key)
                for i in family.identity_inputs}
    keypoints = keypoints or recorded.get("keypoints")
    missing = [i.option for i in family.identity_inputs if not identity[i.key]] + ["--keypoints"] * (not keypoints)
    if missing:
        raise UserError(f"tune measures on real poses and an identity: give --keypoints and "
                        f"{', '.join(i.option for i in family.identity_inputs)} (or export the model with --precision "
                        f"int8, which records them); missing {', '.join(missing)}", model_dir)
    for option, path in (("--keypoints", keypoints), *((f"--{k.replace('_', '-')}", v) for k, v in identity.items())):
        if not Path(path).exists():
            raise UserError(f"{option} not found", path)
    family.check_identity({k: Path(v) for k, v in {**given, **identity}.items() if v}, families.others(family))
    inputs = load_inputs(manifest, identity={k: Path(v) for k, v in identity.items()}, keypoints=Path(keypoints),
                         warn=lambda message: log(f"poserender: warning: {message}"))
    indices = held_out(manifest, len(inputs.frames), frames)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    record = measure(model_dir, manifest, inputs, indices, batch, gate, rounds=rounds, threads=threads or usable,
                     backends=chosen, log=log)
    for c in record["candidates"]:
        if c["status"] == "ok":
            q = c["quality"]
            psnr = "inf" if q["psnr_db"] is None else f"{q['psnr_db']:.1f}"
            click.echo(f"{c['backend']:<10} {c['precision']:<10} {c['ms_per_frame']:9.1f} ms/frame  PSNR {psnr:>6} dB "
                       f"SSIM {q['ssim']:.4f}  gate {'passed' if c['gate']['passed'] else 'FAILED'}")
    skipped: dict = {}
    for c in record["candidates"]:
        if c["status"] != "ok":
            skipped.setdefault((c["backend"], c["reason"]), []).append(c["precision"])
    if skipped:
        click.echo("skipped: " + "; ".join(f"{b} {', '.join(ps)} ({why})" for (b, why), ps in skipped.items()))
    choice = pick_auto(model_dir=model_dir)
    click.echo(f"recorded in {model_dir / 'probe.json'}; render --backend auto picks "
               f"{choice.backend} {choice.precision or 'fp32'} on this host: {choice.why}")
