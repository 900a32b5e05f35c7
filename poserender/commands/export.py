"""`poserender export`: checkpoint -> verified ONNX stages + manifest.json."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..errors import UserError
from .common import WARP_CHOICES, load_config, log, user_errors


@click.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("--model", "family", type=click.Choice(["auto", "pose2img", "psc"]), default="auto", show_default=True,
              help="Model family; auto: psc for a folder holding pm.pth, aa.pth and ct.pth, else pose2img.")
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
@click.option("--int8-target", type=click.Choice(["ort", "trt", "both"]), default="ort", show_default=True,
              help="int8: ort: frame.int8.onnx for ONNX Runtime CPU (uint8 activations); trt: frame.int8.trt.onnx, "
                   "symmetric INT8 Q/DQ for TensorRT's explicit quantization (checked against TensorRT's Q/DQ rules, "
                   "gated on ONNX Runtime CPU); both: calibrate once, write both.")
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

    from ..models.psc.checkpoint import is_psc_checkpoint_dir

    psc = family == "psc" or (family == "auto" and is_psc_checkpoint_dir(checkpoint))
    int8 = _int8_options(precision, calibrate, source, source_keypoints, frames, gate_frames, gate_psnr, gate_ssim,
                         calibration_method, source_parsing, psc, int8_target)
    if psc:
        from ..export.psc_export import export_psc

        if config or scale or warp_mode:
            raise UserError("--config/--scale/--warp-mode are Pose2Img options; a PSC export takes --aa-norm, --size")
        started = time.perf_counter()
        manifest = export_psc(checkpoint, output, aa_norm or "authors", size or 256, size or 256, log=log)
        h, w = manifest["canvas"]
        click.echo(f"exported {checkpoint} -> {output}: psc stages {', '.join(s['name'] for s in manifest['stages'])}, "
                   f"{h}x{w}, AA-Net norm {manifest['config']['aa_norm']}, verified with ONNX Runtime "
                   f"({time.perf_counter() - started:.1f} s)")
        if int8:
            _add_int8(Path(output), int8, lambda: psc_calibration_data(manifest, Path(calibrate), Path(source),
                                                                       Path(source_parsing)))
        return
    if aa_norm or size:
        raise UserError("--aa-norm/--size are PSC options; CHECKPOINT is not a folder with pm.pth, aa.pth, ct.pth")
    if Path(checkpoint).is_dir():
        raise UserError("is a folder; expected a Pose2Img checkpoint file, or a PSC folder with pm.pth, aa.pth "
                        "and ct.pth", checkpoint)
    from ..export.pose2img_export import export_checkpoint

    started = time.perf_counter()
    cfg = load_config(config, scale)
    if cfg is None and scale is not None:
        raise UserError("--scale needs --config (or re-export from a config)")
    manifest = _current_export(Path(output), Path(checkpoint), cfg, warp_mode) if int8 else None
    if manifest is not None:
        click.echo(f"reusing the FP32 export in {output} (same checkpoint, config, warp mode and poserender "
                   "version); adding INT8 graphs")
    else:
        manifest = export_checkpoint(checkpoint, cfg, output, warp_mode, log=log)
        h, w = manifest["canvas"]
        click.echo(f"exported {checkpoint} -> {output}: stages {', '.join(s['name'] for s in manifest['stages'])}, "
                   f"{h}x{w}, warp {manifest['warp_mode']}, verified with ONNX Runtime "
                   f"({time.perf_counter() - started:.1f} s)")
    if int8:
        from ..config import Pose2ImgConfig

        _add_int8(Path(output), int8, lambda: calibration_data(Pose2ImgConfig.from_dict(manifest["config"]),
                                                               Path(calibrate), Path(source), Path(source_keypoints)))


def _add_int8(model_dir: Path, int8: dict, load_data) -> None:
    """Read the calibration inputs (``load_data()``), add the INT8 graphs behind the gate, say what was written."""
    import time

    from ..export.quantize import add_int8_targets

    started = time.perf_counter()
    entries = add_int8_targets(model_dir, load_data(), log=log, **int8)
    for target, entry in entries.items():
        q = entry["quality"]
        files = ", ".join(s["file"] for s in entry["stages"])
        psnr = "inf" if q["psnr_db"] is None else q["psnr_db"]
        where = "" if target == "ort" else " (TensorRT Q/DQ rules ok; measured on ONNX Runtime CPU)"
        click.echo(f"INT8 {files} ({entry['calibration']['method']} calibration, "
                   f"{entry['calibration']['frames']} frames): PSNR {psnr}"
                   f" dB, SSIM {q['ssim']}, max |err| {q['max_abs_error']:g} on {q['frames']} held-out frames, "
                   f"gate {int8['gate'].describe()} passed{where} ({time.perf_counter() - started:.1f} s)")


def _current_export(output: Path, checkpoint: Path, config, warp_mode: Optional[str]):
    """The manifest of an FP32 pose2img export in ``output`` that this export would reproduce
    (same checkpoint sha256, config, warp mode, poserender version), else None. Lets
    ``--precision int8`` re-calibrate without re-exporting the FP32 graphs."""
    import json

    from .. import __version__
    from ..manifest import MANIFEST, read_manifest, sha256_file

    if not (output / MANIFEST).is_file():
        return None
    try:
        manifest = read_manifest(output)
    except UserError:
        return None
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731
    if manifest.get("family", "pose2img") != "pose2img" or manifest.get("poserender") != __version__ \
            or (manifest.get("checkpoint") or {}).get("sha256") != sha256_file(checkpoint) \
            or (config is not None and not same(json.loads(json.dumps(config.to_dict())), manifest["config"])) \
            or (warp_mode is not None and warp_mode != manifest.get("warp_mode")):
        return None
    return manifest


def _int8_options(precision: str, calibrate, source, source_keypoints, frames: int, gate_frames: int,
                  gate_psnr: float, gate_ssim, method: str, source_parsing=None, psc: bool = False,
                  target: str = "ort") -> dict:
    """add_int8's keyword arguments for --precision int8 (checked before any work), else {}.
    pose2img identities take --source-keypoints, PSC ones --source-parsing."""
    from pathlib import Path

    from ..export.quality import QualityGate

    identity, other = ("--source-parsing", "--source-keypoints") if psc else ("--source-keypoints", "--source-parsing")
    values = {"--calibrate": calibrate, "--source": source, "--source-keypoints": source_keypoints,
              "--source-parsing": source_parsing}
    if values[other]:
        raise UserError(f"{other} is for {'pose2img' if psc else 'PSC'} models; "
                        f"{'a PSC' if psc else 'this'} model calibrates with {identity}")
    names = ("--calibrate", "--source", identity)
    given = [name for name in names if values[name]]
    if precision != "int8":
        if target != "ort":
            given.append("--int8-target")
        if given:
            raise UserError(f"{', '.join(given)} apply to --precision int8")
        return {}
    missing = [name for name in names if name not in given]
    if missing:
        kind = "POSES" if psc else "KEYPOINTS"
        ident = "--source-parsing S0.png" if psc else "--source-keypoints KP"
        raise UserError(f"--precision int8 needs real calibration inputs: --calibrate {kind}, --source IMAGE and "
                        f"{ident}; missing {', '.join(missing)}")
    for option in names:
        value = values[option]
        if not Path(value).exists():
            raise UserError(f"{option} not found", value)
    if frames < 1 or gate_frames < 1:
        raise UserError(f"--frames {frames} and --gate-frames {gate_frames}; expected at least 1 each")
    try:
        gate = QualityGate(gate_psnr, gate_ssim)
    except ValueError as exc:
        raise UserError(f"--gate-psnr/--gate-ssim: {exc}") from None
    return {"method": method, "frames": frames, "gate_frames": gate_frames, "gate": gate, "target": target}


def calibration_data(config, keypoints, source, source_keypoints):
    """Real calibration inputs on the canvas, read the way `poserender render` reads them: the
    source image and keypoints (first frame) and the target sequence without its bad frames."""
    import numpy as np

    from ..export.quantize import CalibrationData
    from ..keypoints import canvas_transform, read_keypoints
    from ..runtime.render import load_source_image, load_source_keypoints

    seq = read_keypoints(keypoints, config)
    good = ~seq.bad & seq.valid.any(axis=1)
    if not good.any():
        raise UserError("has no usable frame to calibrate on", keypoints)
    image = load_source_image(source, config)
    src_xy, src_valid = load_source_keypoints(source_keypoints, config)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return CalibrationData(
        {"source_image": f32(image), "source_keypoints": f32(src_xy), "source_valid": f32(src_valid)},
        f32(canvas_transform(seq.xy[good], config)), f32(seq.valid[good]),
        {"keypoints": str(Path(keypoints).resolve()), "usable_frames": int(good.sum()),
         "bad_frames_left_out": int((~good).sum()), "source_image": str(Path(source).resolve()),
         "source_keypoints": str(Path(source_keypoints).resolve())})


def psc_calibration_data(manifest, poses, source, source_parsing):
    """Real PSC calibration inputs, read the way `poserender render` reads a PSC stream (the
    PSC adapter): I0 and S0 as the source stage's feed, the pose stream (csv file or folder,
    OpenPose JSON, .npy) without its bad frames, in canvas pixels (missing joints at -1)."""
    import numpy as np

    from ..errors import BadFrame
    from ..export.quantize import CalibrationData
    from ..runtime.adapters import PSCAdapter
    from ..runtime.psc_render import load_psc_image, load_psc_parsing

    height, width = (int(v) for v in manifest["canvas"])
    image = load_psc_image(Path(source), height, width, log)
    labels = load_psc_parsing(Path(source_parsing), height, width, int(manifest["config"]["classes"]))
    adapter = PSCAdapter(manifest, Path(source), Path(source_parsing))
    xys, valids, bad = [], [], 0
    for frame in adapter.open_file(Path(poses), 25.0):
        try:
            if frame.bad is not None:
                raise frame.bad
            xy, valid = adapter.normalise(frame)
        except BadFrame:
            bad += 1
            continue
        xys.append(xy), valids.append(valid)
    if not xys:
        raise UserError("has no usable pose to calibrate on", poses)
    return CalibrationData(
        {"source_image": image, "source_labels": labels}, np.stack(xys), np.stack(valids),
        {"keypoints": str(Path(poses).resolve()), "usable_frames": len(xys), "bad_frames_left_out": bad,
         "source_image": str(Path(source).resolve()), "source_parsing": str(Path(source_parsing).resolve())})
