"""`poserender build`: exported ONNX stages -> TensorRT engines per stage and device."""
from __future__ import annotations

import click

from ..errors import UserError
from .common import cache_root, log, user_errors


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--precision", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
              help="Reduced precision keeps unsafe layers (normalisation, warps, softmax, keypoint math) in FP32; "
                   "int8 builds the calibrated Q/DQ graphs of `export --precision int8 --int8-target trt`.")
@click.option("--devices", default="0", show_default=True,
              help="GPU indices, e.g. 0,1 (stages split across them); 0,0 exercises two workers on one GPU.")
@click.option("--replicate", is_flag=True, help="Run the per-frame stage on every listed device.")
@click.option("--optimization-level", default=3, show_default=True, type=click.IntRange(0, 5),
              help="TensorRT builder optimization level (higher: longer build, maybe faster engine).")
@click.option("--rebuild-if-needed", is_flag=True,
              help="Keep engines that still match this machine and model; rebuild only the others.")
@click.option("--timing-cache", type=click.Path(file_okay=False),
              help="Folder of timing caches (one per GPU model); default: the poserender cache.")
@click.option("--no-verify", is_flag=True, help="Skip the cross-backend check after building.")
@user_errors
def build(model_dir: str, precision: str, devices: str, replicate: bool, optimization_level: int,
          rebuild_if_needed: bool, timing_cache, no_verify: bool) -> None:
    """Build TensorRT engines (.plan) for an exported MODEL_DIR, per stage and per device.

    \b
    poserender build art/oliver --precision fp16 --devices 0,1
    """
    import time
    from pathlib import Path

    from ..engines.placement import CPU, check_devices, gpu_indices, parse_devices, plan_placement
    from ..export.trt_build import build_model, require_tensorrt
    from ..manifest import read_manifest, write_json_atomic

    started = time.perf_counter()
    model = Path(model_dir)
    manifest = read_manifest(model)
    device_list = parse_devices(devices)
    if CPU in device_list:
        raise UserError(f"--devices {devices}: build makes TensorRT engines for GPUs; expected GPU indices such as 0 or 0,1")
    require_tensorrt()
    check_devices(device_list)
    placement = plan_placement(manifest["stages"], device_list, replicate)
    log(f"placement: {placement.describe()}")
    options = {"precision": precision, "devices": list(gpu_indices(device_list)), "replicate": replicate,
               "optimization_level": optimization_level, "placement": placement.to_dict()}
    manifest = build_model(model, manifest, [(stage, int(d)) for stage, d in placement.engines()], precision, options,
                           Path(timing_cache) if timing_cache else cache_root() / "trt_timing",
                           optimization_level, rebuild_if_needed, log)
    write_json_atomic(model / "manifest.json", manifest)
    if not no_verify:
        from .verify import verify_model
        verify_model(model, backends=("trt",), device=str(device_list[0]), precision=precision)
    click.echo(f"built {len(placement.engines())} engine(s) in {model} ({precision}; {placement.describe()}) "
               f"in {time.perf_counter() - started:.1f} s")
