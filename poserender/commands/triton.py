"""`poserender triton` (an export -> a Triton model repository), `poserender triton-serve` (a real
tritonserver on it) and `poserender triton-client` (a keypoint file -> the repository's ensemble
on a Triton server -> a video)."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from ..triton.contract import BACKENDS, ENGINE_ALIASES, PYTHON_ENGINES
from .common import log, user_errors


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Repository folder to write, e.g. model_repository/ (replaced if it holds an earlier one).")
@click.option("--devices",
              help="Where Triton runs each model: GPU indices (0,1: an instance on each; 0,0: two on GPU 0) "
                   "or cpu (cpu,cpu: two CPU instances). Default: 0 where nvidia-smi lists a GPU, else cpu "
                   "(always cpu for --backend python).")
@click.option("--max-batch", default=8, show_default=True, type=int,
              help="max_batch_size of the batching (per-identity) models, capped at each stage's batch range.")
@click.option("--preferred-batch", default=4, show_default=True, type=int,
              help="dynamic_batching preferred_batch_size.")
@click.option("--queue-delay-us", default=500, show_default=True, type=int,
              help="dynamic_batching max_queue_delay_microseconds.")
@click.option("--backend", type=click.Choice(BACKENDS),
              help="Triton backend of the stage models. onnxruntime: model.onnx; tensorrt: the plans "
                   "`poserender build` made for these GPUs; python: poserender's own engine (--python-engine) "
                   "in Triton's Python backend, which the server of `pip install --no-deps nvidia-pytriton` "
                   "has; auto (default): plans where every listed GPU has a current one, onnxruntime otherwise.")
@click.option("--engine", type=click.Choice(list(ENGINE_ALIASES)), hidden=True,
              help="Earlier name of --backend: onnx = onnxruntime, plan = tensorrt.")
@click.option("--python-engine", default=PYTHON_ENGINES[0], show_default=True, type=click.Choice(PYTHON_ENGINES),
              help="--backend python: the poserender engine each stage model runs.")
@click.option("--threads", default=0, show_default=True, type=int,
              help="--backend python: ONNX Runtime threads per model instance (0: all cores).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]),
              help="Which plans to use (default: the precision of the last `poserender build`).")
@click.option("--name", help="Ensemble name; stage models are NAME_<stage> (default: the family, pose2img or psc).")
@click.option("--cache-source", is_flag=True,
              help="Enable Triton's response cache on the identity stage, so a repeated identity skips it "
                   "(the server must run with --cache-config local,size=BYTES).")
@user_errors
def triton(model_dir, output, devices, max_batch, preferred_batch, queue_delay_us, backend, engine, python_engine,
           threads, precision, name, cache_source) -> None:
    """Write a Triton Inference Server model repository for an exported MODEL_DIR.

    One model per stage (ONNX Runtime, TensorRT or Python backend) and an ensemble that takes
    the identity inputs and a batch of keypoints and returns uint8 BGR frames. Every
    config.pbtxt is checked against Triton's schema, the ONNX graphs and the ensemble rules
    before the folder is written.

    \b
    poserender triton art/oliver -o model_repository --backend python
    poserender triton-serve model_repository
    poserender triton art/oliver -o model_repository --devices 0,1 --backend tensorrt
    """
    from ..triton.contract import backend_name
    from ..engines.placement import parse_devices
    from ..triton.repository import TritonOptions, default_devices, generate_repository

    if engine is not None and backend is not None and backend_name(engine) != backend:
        raise UserError(f"--engine {engine} (= --backend {backend_name(engine)}) contradicts --backend {backend}; "
                        "give --backend only")
    backend = backend or backend_name(engine or "auto")
    options = TritonOptions(devices=parse_devices(devices) if devices is not None else default_devices(backend),
                            max_batch=max_batch, preferred_batch=preferred_batch, queue_delay_us=queue_delay_us,
                            backend=backend, name=name, precision=precision, cache_source=cache_source,
                            python_engine=python_engine, threads=threads)
    from ..triton.contract import METADATA

    replaced = " (replaced the earlier one)" if (Path(output) / METADATA).is_file() else ""
    metadata = generate_repository(Path(model_dir), Path(output), options, log=log)
    models = ", ".join(s["model"] for s in metadata["stages"])
    click.echo(f"wrote Triton repository {output}{replaced}: ensemble {metadata['ensemble']!r} "
               f"({' -> '.join(metadata['chain'])}), models {models}")


@click.command("triton-serve")
@click.argument("repositories", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address the HTTP, gRPC and metrics endpoints bind (0.0.0.0 exposes them to the network).")
@click.option("--http-port", default=8000, show_default=True, type=int)
@click.option("--grpc-port", default=8001, show_default=True, type=int)
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port (default: metrics off).")
@click.option("--server", type=click.Path(dir_okay=False),
              help="The tritonserver to run (default: the nvidia-pytriton wheel's, else tritonserver on PATH).")
@click.option("--log", "log_file", type=click.Path(dir_okay=False),
              help="Write the server's log to this file (default: a temporary file, removed on exit).")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for every model to load.")
@click.option("--print-command", is_flag=True,
              help="Print the tritonserver command line and exit (the backend folder and environment it gets "
                   "are made at start).")
@user_errors
def triton_serve(repositories, address, http_port, grpc_port, metrics_port, server, log_file, timeout,
                 print_command) -> None:
    """Run a real tritonserver on repositories written by `poserender triton`.

    Binds 127.0.0.1 by default, waits until every model is loaded, prints the endpoints, and
    stops the server on Ctrl-C or SIGTERM. Python-backend models run poserender from this
    interpreter's packages.

    \b
    poserender triton art/oliver -o model_repository --backend python
    poserender triton-serve model_repository
    poserender triton-client --url 127.0.0.1:8001 --source img.jpg --source-keypoints kp.npy poses.npz -o out.mp4
    """
    import shlex
    import signal
    import time

    from ..triton.server import TritonServer

    for port, option in ((http_port, "--http-port"), (grpc_port, "--grpc-port"), (metrics_port, "--metrics-port")):
        if port is not None and not 1 <= port <= 65535:
            raise UserError(f"{option} {port}; expected a TCP port, 1 to 65535")
    if timeout <= 0:
        raise UserError(f"--timeout {timeout:g}; expected seconds > 0")
    server_run = TritonServer(repositories, address=address, http_port=http_port, grpc_port=grpc_port,
                              metrics_port=metrics_port, server=server, log=log_file)
    if print_command:
        click.echo(shlex.join(server_run.command()))
        return

    def terminate(signum, frame):
        raise KeyboardInterrupt

    if address not in ("127.0.0.1", "localhost", "::1"):
        log(f"poserender: warning: --address {address}: the endpoints are reachable from other machines")
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        log(f"starting {server_run.binary.source} ({server_run.binary.executable}) on "
            f"{', '.join(str(r) for r in repositories)}")
        server_run.start().wait_ready(timeout)
        click.echo(f"tritonserver ready: gRPC {server_run.grpc_url}, HTTP {server_run.http_url}"
                   + (f", metrics http://{address}:{metrics_port}/metrics" if metrics_port else "")
                   + " (Ctrl-C stops it)")
        while server_run.process.poll() is None:
            time.sleep(0.5)
        raise UserError(f"tritonserver exited with code {server_run.process.returncode}: {server_run.log_tail()}")
    except KeyboardInterrupt:
        code = server_run.stop()
        click.echo(f"tritonserver stopped (exit code {code})")
    finally:
        server_run.stop()
        signal.signal(signal.SIGTERM, previous)


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
    from .render import StreamProgress

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
    progress = StreamProgress()
    try:
        report = stream_through_ensemble(
            transport, model, keypoints, output, source_image=Path(source) if source else None,
            source_keypoints=Path(source_keypoints) if source_keypoints else None,
            source_parsing=Path(source_parsing) if source_parsing else None, batch=batch, concurrency=concurrency,
            fps=fps, fmt=fmt, audio=Path(audio) if audio else None, on_bad_frame=on_bad_frame,
            max_frames=max_frames, log=log, progress=progress)
    finally:
        progress.finish()
    counts = report.counts
    extra = "".join(f", {n} {k}" for k, n in (("held", counts.held), ("skipped", counts.skipped)) if n)
    click.echo(f"rendered {counts.frames_out}/{counts.frames_in} frames{extra} to {report.sink.path} through "
               f"ensemble {model!r} ({where}) in {report.requests} requests of up to {report.batch} frames, "
               f"{report.seconds:.1f} s ({report.fps:.1f} fps)")
    if report.interrupted:
        raise SystemExit(report.exit_code)
