"""`poserender triton` (an export -> a Triton model repository) and `poserender triton-client`
(a keypoint file -> the repository's ensemble on a Triton server -> a video)."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from .common import log, user_errors


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Repository folder to write, e.g. model_repository/ (replaced if it holds an earlier one).")
@click.option("--devices", default="0", show_default=True,
              help="Where Triton runs each model: GPU indices (0,1: an instance on each; 0,0: two on GPU 0) "
                   "or cpu (cpu,cpu: two CPU instances).")
@click.option("--max-batch", default=8, show_default=True, type=int,
              help="max_batch_size of the batching (per-identity) models, capped at each stage's batch range.")
@click.option("--preferred-batch", default=4, show_default=True, type=int,
              help="dynamic_batching preferred_batch_size.")
@click.option("--queue-delay-us", default=500, show_default=True, type=int,
              help="dynamic_batching max_queue_delay_microseconds.")
@click.option("--engine", default="auto", show_default=True, type=click.Choice(["auto", "onnx", "plan"]),
              help="onnx: ONNX Runtime backend; plan: the TensorRT plans `poserender build` made for these "
                   "GPUs; auto: plans where every listed GPU has a current one, ONNX otherwise.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]),
              help="Which plans to use (default: the precision of the last `poserender build`).")
@click.option("--name", help="Ensemble name; stage models are NAME_<stage> (default: the family, pose2img or psc).")
@click.option("--cache-source", is_flag=True,
              help="Enable Triton's response cache on the identity stage, so a repeated identity skips it "
                   "(the server must run with --cache-config local,size=BYTES).")
@user_errors
def triton(model_dir, output, devices, max_batch, preferred_batch, queue_delay_us, engine, precision, name,
           cache_source) -> None:
    """Write a Triton Inference Server model repository for an exported MODEL_DIR.

    One model per stage (ONNX Runtime or TensorRT backend) and an ensemble that takes the
    identity inputs and a batch of keypoints and returns uint8 BGR frames. Every config.pbtxt
    is checked against Triton's schema, the ONNX graphs and the ensemble rules before the
    folder is written.

    \b
    poserender triton art/oliver -o model_repository --devices 0,1
    docker run --gpus all -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD/model_repository:/models \\
        nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models
    """
    from ..triton.repository import TritonOptions, generate_repository, parse_devices

    options = TritonOptions(devices=parse_devices(devices), max_batch=max_batch, preferred_batch=preferred_batch,
                            queue_delay_us=queue_delay_us, engine=engine, name=name, precision=precision,
                            cache_source=cache_source)
    metadata = generate_repository(Path(model_dir), Path(output), options, log=log)
    models = ", ".join(s["model"] for s in metadata["stages"])
    click.echo(f"wrote Triton repository {output}: ensemble {metadata['ensemble']!r} "
               f"({' -> '.join(metadata['chain'])}), models {models}")


@click.command("triton-client")
@click.argument("keypoints")
@click.option("-o", "--output", required=True, type=click.Path(),
              help="out.mp4 or a folder for png/jpg frames.")
@click.option("--url", default="localhost:8001", show_default=True, help="Triton's gRPC endpoint, HOST:PORT.")
@click.option("--model", help="The ensemble's name (default: the ensemble of --local's repository, else pose2img).")
@click.option("--local", "local_repo", type=click.Path(file_okay=False),
              help="Run a repository written by `poserender triton` in this process with ONNX Runtime instead "
                   "of a server (checks the repository end to end).")
@click.option("--source", "source", type=click.Path(), help="Source image (the identity); PSC: I0 image.")
@click.option("--source-keypoints", type=click.Path(), help="pose2img: the source's OpenPose keypoints (.npy/.json).")
@click.option("--source-parsing", type=click.Path(), help="PSC: the source's parsing label PNG (S0).")
@click.option("--batch", default=4, show_default=True, help="Frames per request (capped at the frame stage's range).")
@click.option("--concurrency", default=2, show_default=True, help="Requests in flight at once.")
@click.option("--fps", default=15.0, show_default=True, help="Output frame rate.")
@click.option("--format", "fmt", type=click.Choice(["mp4", "png", "jpg"]), help="Default: from -o.")
@click.option("--audio", type=click.Path(), help="Audio to mux into the mp4.")
@click.option("--on-bad-frame", default="hold", show_default=True, type=click.Choice(["hold", "skip", "error"]),
              help="NaN/inf, wrong joint count or missing frames: repeat the last good pose, drop it, or stop.")
@click.option("--max-frames", type=int, help="Send only the first N input frames.")
@click.option("--timeout", type=float, help="Seconds to wait for each response (default: no limit).")
@user_errors
def triton_client(keypoints, output, url, model, local_repo, source, source_keypoints, source_parsing, batch,
                  concurrency, fps, fmt, audio, on_bad_frame, max_frames, timeout) -> None:
    """Stream a KEYPOINTS file through a poserender ensemble on Triton and write the video.

    KEYPOINTS is anything `poserender render` reads from a file (.npz, .npy, OpenPose JSON,
    PSC csv). The ensemble's config (from the server) says which family and canvas it is;
    each request carries the identity inputs and up to --batch frames.

    \b
    poserender triton-client --url localhost:8001 --model pose2img --source img.jpg \\
        --source-keypoints kp.npy poses.npz -o out.mp4
    poserender triton-client --local model_repository --source img.jpg --source-keypoints kp.npy poses.npz -o out.mp4
    """
    from ..triton.client import GrpcTransport, check_url, stream_through_ensemble
    from .common import Progress

    if fps <= 0 or (max_frames is not None and max_frames < 1):
        raise UserError(f"--fps {fps:g} must be positive and --max-frames at least 1")
    for option, value in (("--source", source), ("--source-keypoints", source_keypoints),
                          ("--source-parsing", source_parsing), ("KEYPOINTS", keypoints), ("--audio", audio)):
        if value is not None and not Path(value).exists():
            raise UserError(f"{option} not found", value)
    if local_repo is not None:
        import json

        from ..triton.local import LocalTriton
        from ..triton.repository import METADATA

        transport = LocalTriton(local_repo)
        meta_path = Path(local_repo) / METADATA
        if model is None and meta_path.is_file():
            model = json.loads(meta_path.read_text()).get("ensemble")
        where = f"local repository {local_repo}"
    else:
        transport = GrpcTransport(check_url(url), timeout_s=timeout)
        where = f"Triton at {url}"
    model = model or "pose2img"
    progress = Progress("rendering")
    try:
        report = stream_through_ensemble(
            transport, model, keypoints, output, source_image=Path(source) if source else None,
            source_keypoints=Path(source_keypoints) if source_keypoints else None,
            source_parsing=Path(source_parsing) if source_parsing else None, batch=batch, concurrency=concurrency,
            fps=fps, fmt=fmt, audio=Path(audio) if audio else None, on_bad_frame=on_bad_frame,
            max_frames=max_frames, log=log, progress=lambda done, total: progress(done, total or 0))
    finally:
        progress.finish()
    counts = report.counts
    extra = "".join(f", {n} {k}" for k, n in (("held", counts.held), ("skipped", counts.skipped)) if n)
    click.echo(f"rendered {counts.frames_out}/{counts.frames_in} frames{extra} to {report.sink.path} through "
               f"ensemble {model!r} ({where}) in {report.requests} requests of up to {report.batch} frames, "
               f"{report.seconds:.1f} s ({report.fps:.1f} fps)")
    if report.interrupted:
        raise SystemExit(130)
