"""`poserender export`: checkpoint -> verified ONNX stages + manifest.json."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..errors import UserError
from .common import WARP_CHOICES, log, user_errors


@click.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("--model", "family", default="auto", show_default=True,
              help="Model family (pose2img, psc); auto: psc for a folder holding pm.pth, aa.pth and ct.pth, "
                   "else pose2img.")
@click.option("--config", "config", type=click.Path(), help="Pose2Img YAML, e.g. Oliver.yaml "
              "(optional for poserender checkpoints, which embed theirs).")
@click.option("--scale", type=float, help="Override HYPERPARAM.scale: canvas = 640 / scale (e.g. 2.5 -> 256).")
@click.option("--warp-mode", type=click.Choice(WARP_CHOICES), help="Warp sampler; default: the "
              "checkpoint's, or legacy (the reference sampler) for the authors' checkpoints.")
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Output folder, e.g. art/oliver.")
@click.option("--aa-norm", type=click.Choice(["authors", "eval"]), help="psc: AA-Net BatchNorm statistics; "
              "authors (default: per-sample batch statistics, what the reference's test.py computes) or eval.")
@click.option("--size", type=int, help="psc: square canvas in pixels, a multiple of 16 (default 256, the reference's).")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True,
              help="int8: also write calibrated INT8 (QDQ) graphs for ONNX Runtime CPU (frame.int8.onnx; "
                   "TensorRT: --int8-target), behind a quality gate; needs --calibrate, --source and --source-keypoints (psc: --source-parsing).")
@click.option("--calibrate", "calibrate", type=click.Path(), help="int8: real target poses to calibrate on, "
              "e.g. varying_tmplt.npz (.npz, .npy or an OpenPose JSON folder, as `render --keypoints`).")
@click.option("--source", "source", type=click.Path(), help="int8: the identity's source image, e.g. frame.jpg "
              "(its source-stage outputs are the frame stage's calibration inputs).")
@click.option("--source-keypoints", type=click.Path(), help="int8: the source image's keypoints (.npy 3x137 or .json).")
@click.option("--source-parsing", type=click.Path(), help="int8, psc: the source image's parsing (S0 label PNG); "
              "PSC calibrates with --calibrate POSES (csv folder), --source I0.jpg and --source-parsing S0.png.")
@click.option("--frames", type=int, default=32, show_default=True, help="int8: calibration frames, spread over the "
              "head of the sequence; held-out frames from its tail are kept for the gate.")
@click.option("--gate-frames", type=int, default=16, show_default=True,
              help="int8: held-out frames the quality gate measures (never calibration frames).")
@click.option("--calibration-method", type=click.Choice(["auto", "minmax", "entropy", "percentile"]),
              default="auto", show_default=True,
              help="int8: activation ranges from MinMax, entropy (KL) or percentile (99.999) histograms; auto "
                   "tries all three and keeps the best PSNR on 8 more held-out frames (three calibrations: "
                   "about 5 minutes for the full-size net on 2 cores; minmax alone about 40 s).")
@click.option("--gate-psnr", type=float, default=35.0, show_default=True,
              help="int8: refuse the export when the INT8 frames' PSNR vs FP32 on the held-out frames is lower (dB).")
@click.option("--gate-ssim", type=float, help="int8: also refuse below this SSIM (e.g. 0.95).")
@click.option("--int8-target", type=click.Choice(["ort", "trt", "both", "ov"]), default="ort", show_default=True,
              help="int8: ort: frame.int8.onnx for ONNX Runtime CPU (uint8 activations); trt: frame.int8.trt.onnx, "
                   "symmetric INT8 Q/DQ for TensorRT's explicit quantization (checked against TensorRT's Q/DQ rules, "
                   "gated on ONNX Runtime CPU); both: calibrate once, write both; ov: the ort graph plus NNCF's "
                   "quantization for OpenVINO from the same calibration frames (frame.int8.nncf.xml, gated on "
                   "OpenVINO on the same held-out frames); ov-cpu runs whichever of the two was faster there "
                   "(needs the openvino extra).")
@user_errors
def export_cmd(checkpoint: str, family: str, config: Optional[str], scale: Optional[float], warp_mode: Optional[str],
               output: str, aa_norm: Optional[str], size: Optional[int], precision: str, calibrate: Optional[str],
               source: Optional[str], source_keypoints: Optional[str], source_parsing: Optional[str],
               frames: int, gate_frames: int,
               calibration_method: str, gate_psnr: float, gate_ssim: Optional[float], int8_target: str) -> None:
    """Export CHECKPOINT to one verified ONNX graph per stage plus manifest.json.

    CHECKPOINT is a Pose2Img .pth (with --config), or a PSC folder with pm.pth, aa.pth and ct.pth.
    With --precision int8 the frame stage is also quantized (QDQ, calibrated on real poses; PSC:
    CT-Net, InstanceNorm kept FP32) and checked against FP32 on held-out frames; below --gate-psnr
    the INT8 graph is refused (exit 2; the FP32 export is complete and stays). --int8-target trt|both
    also writes frame.int8.trt.onnx, symmetric INT8 Q/DQ for TensorRT, under the same gate.

    \b
    poserender export ckpt.pth --config Oliver.yaml --scale 2.5 -o art/oliver
    poserender export ckpt.pth --config Oliver.yaml --scale 2.5 -o art/oliver --precision int8 \\
        --calibrate varying_tmplt.npz --source frame.jpg --source-keypoints frame.npy [--int8-target both]
    poserender export psc_ckpt/ -o art/psc --precision int8 --calibrate train/joint_interpolation \\
        --source test/I0/0001.jpg --source-parsing test/S0/0001.png
    """
    import time

    from .. import families
    from ..export.exporter import export_checkpoint

    path = Path(checkpoint)
    if not path.exists():
        raise UserError("not found; expected a Pose2Img checkpoint file or a PSC folder with pm.pth, aa.pth and "
                        "ct.pth", path)
    chosen = families.detect(path) if family == "auto" else families.get(family)
    if not chosen.is_checkpoint(path):
        raise UserError(f"is not a {chosen.name} checkpoint; expected a Pose2Img checkpoint file, or a PSC folder "
                        "with pm.pth, aa.pth and ct.pth", path)
    options = {"config": config, "scale": scale, "warp_mode": warp_mode, "aa_norm": aa_norm, "size": size}
    options = {k: v for k, v in options.items() if v is not None}
    chosen.check_export_options(options)
    identity = {"source": source, "source_keypoints": source_keypoints, "source_parsing": source_parsing}
    int8 = _int8_options(chosen, precision, calibrate, identity, frames, gate_frames, gate_psnr, gate_ssim,
                         calibration_method, int8_target)
    started = time.perf_counter()
    manifest = _current_export(Path(output), chosen, path, options) if int8 else None
    if manifest is not None:
        click.echo(f"reusing the FP32 export in {output} (same checkpoint, export options and poserender "
                   "version); adding INT8 graphs")
    else:
        from ..manifest import MANIFEST

        replaced = " (replaced the earlier export)" if (Path(output) / MANIFEST).is_file() else ""
        manifest = export_checkpoint(chosen, path, output, options, log=log)
        h, w = manifest["canvas"]
        detail = chosen.describe(manifest)
        click.echo(f"exported {checkpoint} -> {output}{replaced}: {chosen.name} stages "
                   f"{', '.join(s['name'] for s in manifest['stages'])}, {h}x{w}{', ' + detail if detail else ''}, "
                   f"verified with ONNX Runtime ({time.perf_counter() - started:.1f} s)")
    if int8:
        _add_int8(Path(output), chosen, Path(calibrate), int8)


def _add_int8(model_dir: Path, family, calibrate: Path, int8: dict) -> None:
    """Read the calibration inputs, add the INT8 graphs behind the gate, say what was written."""
    import time

    from ..export.calibration import calibration_data
    from ..export.int8 import add_int8_targets
    from ..manifest import read_manifest

    started = time.perf_counter()
    identity = int8.pop("identity")
    data = calibration_data(family, read_manifest(model_dir), calibrate, identity,
                            warn=lambda message: log(f"poserender: warning: {message}"))
    entries = add_int8_targets(model_dir, data, log=log, **int8)
    for target, entry in entries.items():
        q = entry["quality"]
        files = ", ".join(s["file"] for s in entry["stages"])
        psnr = "inf" if q["psnr_db"] is None else q["psnr_db"]
        where = {"ort": "", "trt": " (TensorRT Q/DQ rules ok; measured on ONNX Runtime CPU)"}.get(target, "")
        if target == "ov":
            route = entry["ov_route"]
            where = (f" (measured on OpenVINO); ov-cpu --precision int8 runs the {route['chosen']} graph "
                     f"(OpenVINO ms/frame: {', '.join(f'{k} {v}' for k, v in route['ms_per_frame'].items())})")
        click.echo(f"INT8 {files} ({entry['calibration']['method']} calibration, "
                   f"{entry['calibration']['frames']} frames): PSNR {psnr}"
                   f" dB, SSIM {q['ssim']}, max |err| {q['max_abs_error']:g} on {q['frames']} held-out frames, "
                   f"gate {int8['gate'].describe()} passed{where} ({time.perf_counter() - started:.1f} s)")


def _current_export(output: Path, family, checkpoint: Path, options: dict):
    """The manifest of an FP32 export in ``output`` that this export would reproduce (same family,
    checkpoint content, export options and poserender version: the recorded ``export_key``), else
    None. Lets ``--precision int8`` re-calibrate without re-exporting the FP32 graphs."""
    from ..export.exporter import export_key
    from ..manifest import MANIFEST, read_manifest

    if not (output / MANIFEST).is_file():
        return None
    try:
        manifest = read_manifest(output)
    except UserError:
        return None
    if manifest.family != family.name or manifest.get("export_key") != export_key(family, checkpoint, options):
        return None
    return manifest


def _int8_options(family, precision: str, calibrate, identity: dict, frames: int, gate_frames: int,
                  gate_psnr: float, gate_ssim, method: str, target: str = "ort") -> dict:
    """add_int8's keyword arguments for --precision int8 (checked before any work), else {};
    the identity inputs are the family's (pose2img: --source-keypoints, PSC: --source-parsing)."""
    from .. import families
    from ..export.quality import QualityGate

    given = [name for name, value in (("--calibrate", calibrate), *((f"--{k.replace('_', '-')}", v)
                                                                    for k, v in identity.items())) if value]
    if precision != "int8":
        if target != "ort":
            given.append("--int8-target")
        if given:
            raise UserError(f"{', '.join(given)} apply to --precision int8")
        return {}
    if family.int8 is None:
        raise UserError(f"--precision int8: a {family.name} model has no INT8 export")
    if target == "ov":
        from ..export.nncf_route import check_available

        check_available()
    wanted = " and ".join(f"{i.option} ({i.help})" for i in family.identity_inputs)
    missing = ["--calibrate"] * (not calibrate) + [i.option for i in family.identity_inputs if not identity.get(i.key)]
    stray = [k for k, v in identity.items() if v and k not in {i.key for i in family.identity_inputs}]
    if stray:
        family.check_identity({k: v for k, v in identity.items() if v}, families.others(family))
    if missing:
        raise UserError(f"--precision int8 needs real calibration inputs: --calibrate POSES and {wanted}; missing "
                        f"{', '.join(missing)}")
    for option, value in (("--calibrate", calibrate), *((f"--{k.replace('_', '-')}", v) for k, v in identity.items())):
        if value and not Path(value).exists():
            raise UserError(f"{option} not found", value)
    if frames < 1 or gate_frames < 1:
        raise UserError(f"--frames {frames} and --gate-frames {gate_frames}; expected at least 1 each")
    try:
        gate = QualityGate(gate_psnr, gate_ssim)
    except ValueError as exc:
        raise UserError(f"--gate-psnr/--gate-ssim: {exc}") from None
    return {"method": method, "frames": frames, "gate_frames": gate_frames, "gate": gate, "target": target,
            "identity": {i.key: Path(identity[i.key]) for i in family.identity_inputs}}
