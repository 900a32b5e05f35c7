"""Measuring code of ``poserender bench`` and ``benchmarks/``: a grid of cells, each timed the same way.

A cell is one (backend, stage, batch, precision, canvas, device layout). Method, per cell:
``warmup`` untimed calls, then timed calls until both ``min_seconds`` and ``min_runs`` are
reached (wall clock, ``time.perf_counter``). Calls slower than the outlier fence
(:func:`clip_outliers`) are dropped from the statistics and counted; the raw p99/max stay in the
result. Throughput is frames / total kept time; latency percentiles are per call (one batch).
Inside a call every stage's ``engine.infer`` is timed on its own (compute); the rest of the call
(slicing keypoints, building feeds) is host time. The synchronous cells have no queues (queue
time 0). A memory sampler thread records the peak RSS (and GPU memory when a GPU is visible).

The reference baseline (:class:`ReferenceBaseline`) runs the model the way the authors do:
PyTorch eager FP32, the full three-U-Net forward per frame at batch 1, every per-sample input
(source heat maps, limb-mask prior, target heat maps, limb transforms) recomputed per frame.
"""
from __future__ import annotations

import dataclasses
import datetime
import difflib
import importlib
import math
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import gpumem
from .errors import UserError

STAGES = ("source", "frame", "all", "stream")
PERCENTILES = (50, 90, 95, 99)
OUTLIER_IQR, OUTLIER_MIN_RATIO = 3.0, 1.2
OUTLIER_RULE = (f"calls slower than max(Q3 + {OUTLIER_IQR:g} x IQR, {OUTLIER_MIN_RATIO:g} x median) are dropped "
                "from the statistics and counted (clipped); raw p99/max are kept beside")
GUARD_LEVELS, GUARD_FRACTION = 2, 0.999
REPO_ROOT = Path(__file__).resolve().parents[1]


class Skip(Exception):
    """A cell that cannot run here; the message is the reason shown to the user."""


@dataclasses.dataclass
class Method:
    warmup: int = 2
    min_seconds: float = 10.0
    min_runs: int = 10
    threads: int = 1
    compare_frames: int = 8

    def check(self) -> None:
        for name, ok, wanted in (("--warmup", self.warmup >= 1, ">= 1"), ("--min-runs", self.min_runs >= 3, ">= 3"),
                                 ("--min-seconds", self.min_seconds >= 0, ">= 0"),
                                 ("--threads", self.threads >= 1, ">= 1")):
            if not ok:
                raise UserError(f"{name} is {getattr(self, name[2:].replace('-', '_'))}; expected {wanted}")


# -- the grid -----------------------------------------------------------------------------------
def parse_ints(text: str, option: str) -> List[int]:
    """'1,4,8' -> [1, 4, 8]; UserError naming the option otherwise."""
    try:
        values = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UserError(f"{option} {text!r}; expected comma-separated positive integers, e.g. 1,4,8")
    return list(dict.fromkeys(values))


def parse_names(text: str, option: str, valid: Sequence[str]) -> List[str]:
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    for name in names:
        if name not in valid:
            near = difflib.get_close_matches(name, valid, 1)
            raise UserError(f"{option} {name!r}; expected one of {', '.join(valid)}"
                            + (f" (did you mean {near[0]}?)" if near else ""))
    if not names:
        raise UserError(f"{option} is empty; expected one of {', '.join(valid)}")
    return list(dict.fromkeys(names))


def known_backends() -> Tuple[str, ...]:
    """Every backend of the registry (engines/registry.py), in its order."""
    from .engines import registry

    return registry.names()


def backend_status(names: Sequence[str]) -> Dict[str, Tuple[bool, str]]:
    """{name: (usable, reason)} from the registry's probes; unknown names are reported, not raised."""
    from .engines import registry

    machine = registry.availability()
    known = known_backends()
    out: Dict[str, Tuple[bool, str]] = {}
    for name in names:
        if name not in known:
            near = difflib.get_close_matches(name, known, 1)
            out[name] = (False, f"unknown backend; known: {', '.join(known)}"
                         + (f" (did you mean {near[0]}?)" if near else ""))
        else:
            out[name] = machine[name]
    return out


# -- statistics ---------------------------------------------------------------------------------
def clip_outliers(times: np.ndarray) -> Tuple[np.ndarray, float]:
    """(mask of kept calls, fence in seconds): see OUTLIER_RULE. Machine noise (another process
    taking the cores for a moment) shows up as a few calls far above the rest."""
    times = np.asarray(times, dtype=np.float64)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    fence = max(q3 + OUTLIER_IQR * (q3 - q1), OUTLIER_MIN_RATIO * median)
    return times <= fence, float(fence)


def summarise(times: Sequence[float], batch: int) -> Dict[str, Any]:
    """Statistics of one cell's timed calls (seconds, one call = one batch) in ms and frames/s."""
    times = np.asarray(times, dtype=np.float64)
    kept_mask, fence = clip_outliers(times)
    kept = times[kept_mask]
    ms = lambda v: round(float(v) * 1e3, 3)  # noqa: E731
    per_frame = kept / batch
    return {
        "runs": int(times.size), "clipped": int(times.size - kept.size), "clip_fence_ms": ms(fence),
        "timed_s": round(float(times.sum()), 3),
        "fps": round(batch * kept.size / float(kept.sum()), 4),
        "latency_ms": {**{f"p{p}": ms(np.percentile(kept, p)) for p in PERCENTILES},
                       "mean": ms(kept.mean()), "min": ms(kept.min()), "max": ms(kept.max())},
        "latency_raw_ms": {"p99": ms(np.percentile(times, 99)), "max": ms(times.max())},
        "per_frame_ms": {"min": ms(per_frame.min()), "median": ms(np.median(per_frame)), "max": ms(per_frame.max())},
        "noise_cv": round(float(kept.std() / kept.mean()), 4) if kept.size > 1 else 0.0,
    }


def frame_agreement(reference: Dict[int, np.ndarray], got: Dict[int, np.ndarray]) -> Dict[str, Any]:
    """uint8 frames of the same index: worst-channel difference, share within GUARD_LEVELS, PSNR."""
    common = sorted(set(reference) & set(got))
    if not common:
        return {"frames_compared": 0, "passed": False}
    a = np.stack([reference[i] for i in common]).astype(np.int16)
    b = np.stack([got[i] for i in common]).astype(np.int16)
    diff = np.abs(a - b).max(-1)
    mse = float(np.mean((a - b).astype(np.float64) ** 2))
    within = float((diff <= GUARD_LEVELS).mean())
    return {"frames_compared": len(common), "max_abs_diff": int(diff.max()),
            "fraction_within_2_levels": round(within, 6),
            "psnr_db": None if mse == 0 else round(10 * math.log10(255.0 ** 2 / mse), 2),
            "passed": within >= GUARD_FRACTION}


class MemorySampler:
    """Peak RSS of this process (and used GPU memory, when NVML answers) while the block runs."""

    def __init__(self, period_s: float = 0.005, gpu: bool = False):
        self.period_s, self.gpu = period_s, gpu
        self.peak_rss = self.peak_gpu = self.gpu_before = None
        self._stop = threading.Event()
        found = gpumem.handles() if gpu else None
        self._nvml = list(found.values()) if found else None

    def _sample(self) -> None:
        rss = _rss_bytes()
        if rss is not None:
            self.peak_rss = max(self.peak_rss or 0, rss)
        if self._nvml:
            used = sum(gpumem.used_bytes(h) for h in self._nvml)
            self.peak_gpu = max(self.peak_gpu or 0, used)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s if not self._nvml else max(self.period_s, 0.02)):
            self._sample()

    def __enter__(self) -> "MemorySampler":
        if self._nvml:
            self.gpu_before = sum(gpumem.used_bytes(h) for h in self._nvml)
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def report(self) -> Dict[str, Any]:
        mib = lambda b: None if b is None else round(b / 2 ** 20, 1)  # noqa: E731
        out = {"peak_rss_mib": mib(self.peak_rss)}
        if self.gpu:
            out["gpu_memory_used_peak_mib"] = mib(self.peak_gpu)
            out["gpu_memory_how"] = ("NVML used memory of all visible GPUs, sampled" if self._nvml else
                                     gpumem.NOT_MEASURED)
        return out


def _rss_bytes() -> Optional[int]:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource  # ru_maxrss: the process peak so far (KiB on Linux), the best fallback
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- timing -------------------------------------------------------------------------------------
Step = Callable[[np.ndarray], Tuple[Dict[str, float], Optional[np.ndarray]]]


def measure(step: Step, batch: int, n_frames: int, method: Method, frames_out: Optional[Dict[int, np.ndarray]] = None,
            gpu: bool = False, on_first: Optional[Callable[[Step, np.ndarray], None]] = None) -> Dict[str, Any]:
    """Warm up, then time ``step(frame_indices)`` until ``min_runs`` and ``min_seconds`` are met.

    ``step`` returns ({stage: compute seconds}, uint8 frames (B, H, W, 3) or None). Target frames
    cycle through the sequence; the first ``method.compare_frames`` indices' frames are kept in
    ``frames_out``. ``on_first`` runs once, untimed, before the warm-up (e.g. to count FLOPs).
    """
    cursor = 0

    def one() -> Tuple[float, Dict[str, float]]:
        nonlocal cursor
        indices = (cursor + np.arange(batch)) % n_frames
        cursor += batch
        start = time.perf_counter()
        compute, frames = step(indices)
        elapsed = time.perf_counter() - start
        if frames_out is not None and frames is not None:
            for i, frame in zip(indices.tolist(), frames):
                if i < method.compare_frames:
                    frames_out.setdefault(i, np.array(frame))
        return elapsed, compute

    with MemorySampler(gpu=gpu) as memory:
        if on_first is not None:
            on_first(step, np.arange(batch) % n_frames)
        warm = [one()[0] for _ in range(method.warmup)]
        times: List[float] = []
        compute: Dict[str, List[float]] = {}
        began = time.perf_counter()
        while len(times) < method.min_runs or time.perf_counter() - began < method.min_seconds:
            elapsed, stages = one()
            times.append(elapsed)
            for name, seconds in stages.items():
                compute.setdefault(name, []).append(seconds)
    result = summarise(times, batch)
    kept, _ = clip_outliers(np.asarray(times))
    compute_kept = {k: np.asarray(v)[kept] for k, v in compute.items()}
    host = np.asarray(times)[kept] - sum(compute_kept.values()) if compute_kept else np.asarray(times)[kept]
    result.update({"warmup_ms": [round(t * 1e3, 3) for t in warm],
                   "compute_ms": {k: round(float(np.median(v)) * 1e3, 3) for k, v in compute_kept.items()},
                   "host_ms": round(float(np.median(host)) * 1e3, 3), "queue_ms": 0.0,
                   **memory.report()})
    return result


# -- inputs -------------------------------------------------------------------------------------
@dataclasses.dataclass
class BenchInputs:
    """Canvas-pixel keypoints and the source image (1, 3, H, W) float32 BGR in [-1, 1]."""

    image: np.ndarray
    source_keypoints: np.ndarray
    source_valid: np.ndarray
    target_keypoints: np.ndarray
    target_valid: np.ndarray
    described: Dict[str, Any]

    def source_feed(self, batch: int = 1) -> Dict[str, np.ndarray]:
        rep = lambda a: np.ascontiguousarray(np.repeat(a, batch, axis=0))  # noqa: E731
        return {"source_image": rep(self.image), "source_keypoints": rep(self.source_keypoints),
                "source_valid": rep(self.source_valid)}


def load_inputs(config, source: Optional[Path] = None, source_keypoints: Optional[Path] = None,
                keypoints: Optional[Path] = None, frames: Optional[int] = None, seed: int = 0) -> BenchInputs:
    """Real files when given (read like ``poserender render`` reads them), else synthetic ones."""
    import cv2

    from .keypoints import canvas_transform, read_keypoints
    from .keypoints.template import gesture_sequence, template_pose
    from .families.pose2img import load_source_image, load_source_keypoints

    h, w = config.canvas_hw
    described: Dict[str, Any] = {}
    if keypoints:
        seq = read_keypoints(Path(keypoints), config)
        good = ~seq.bad & seq.valid.any(axis=1)
        target, target_valid = canvas_transform(seq.xy[good], config), seq.valid[good]
        described["targets"] = f"{keypoints} ({int((~good).sum())} bad frames left out)"
    else:
        target = gesture_sequence(frames or 64, h, w, seed=seed)
        target_valid = np.ones(target.shape[:2], dtype=bool)
        described["targets"] = "synthetic: keypoints.template.gesture_sequence"
    if frames:
        target, target_valid = target[:frames], target_valid[:frames]
    if not len(target):
        raise UserError("no usable target frame", keypoints)
    if source_keypoints:
        src, src_valid = load_source_keypoints(Path(source_keypoints), config)
        described["source_keypoints"] = str(source_keypoints)
    else:
        src, src_valid = template_pose(h, w)[None], np.ones((1, target.shape[1]), dtype=np.float32)
        described["source_keypoints"] = "synthetic: keypoints.template.template_pose"
    if source:
        image = load_source_image(Path(source), config)
        described["source_image"] = str(source)
    else:
        coarse = np.random.default_rng(seed).uniform(-1, 1, (8, 8, 3)).astype(np.float32)
        image = np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), -1, 1).transpose(2, 0, 1)[None]
        described["source_image"] = "synthetic: smooth random image (8x8 noise, bicubic)"
    described["target_frames"] = int(len(target))
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return BenchInputs(f32(image), f32(src), f32(src_valid), f32(target), f32(target_valid), described)


# -- engines and cells --------------------------------------------------------------------------
@dataclasses.dataclass
class EngineSet:
    """Engines of one (backend, precision, layout): the source stage and one frame stage per
    replica (one unless ``--replicate``)."""

    backend: str
    layout: str
    source: Any
    frames: List[Any]

    def all(self) -> List[Any]:
        return [self.source] + self.frames


def layouts(devices: Sequence[str], replicate: bool) -> List[Tuple[str, Optional[str], List[Optional[str]]]]:
    """(label, source device, frame devices) for the device options."""
    if not devices:
        return [("default", None, [None])]
    if replicate:
        return [(f"replicate {','.join(devices)}", devices[0], list(devices))]
    if len(devices) == 1:
        return [(f"device {devices[0]}", devices[0], [devices[0]])]
    if len(devices) != 2:
        raise UserError(f"--devices {','.join(devices)}: a pipeline split takes two devices (source, frame); "
                        "add --replicate to replicate the frame stage on all of them")
    return [(f"split {devices[0]}>{devices[1]}", devices[0], [devices[1]])]


def open_engines(model_dir: Path, manifest: Dict[str, Any], backend: str, precision: str, layout: Tuple,
                 threads: int) -> EngineSet:
    """Build and activate the engines of one layout; Skip with the reason when they cannot run."""
    from . import families
    from .engines import select

    label, source_device, frame_devices = layout
    kwargs: Dict[str, Any] = {"torch_stages": families.of(manifest).torch_stage}
    if precision != manifest.get("precision", "fp32"):
        kwargs["precision"] = precision
    per_worker = max(1, threads // len(frame_devices))

    def stage(device: Optional[str], name: str, worker_threads: int):
        try:
            _, engines = select.stage_engines(model_dir, manifest, backend, device=device, threads=worker_threads,
                                              **kwargs)
            engine = {e.spec.name: e for e in engines}[name]
            return engine.activate()
        except (UserError, ValueError, RuntimeError, ImportError, OSError) as exc:
            raise Skip(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None

    source = stage(source_device, "source", threads)
    frames = [stage(device, "frame", per_worker if len(frame_devices) > 1 else threads) for device in frame_devices]
    return EngineSet(backend, label, source, frames)


def make_step(stage: str, engines: EngineSet, inputs: BenchInputs, batch: int,
              source_out: Dict[str, np.ndarray], replica: int = 0) -> Step:
    """One call of a cell: ({stage: compute seconds}, frames or None)."""
    clock = time.perf_counter
    frame_engine = engines.frames[replica]
    if stage == "source":
        feed = inputs.source_feed(batch)

        def source_step(indices):
            start = clock()
            engines.source.infer(feed)
            return {"source": clock() - start}, None
        return source_step
    identity = {"source_keypoints": inputs.source_keypoints, "source_valid": inputs.source_valid}
    source_feed = inputs.source_feed(1)

    def frame_step(indices):
        compute = {}
        outputs = source_out
        if stage == "all":   # a new identity: its source stage, then its first batch of frames
            start = clock()
            outputs = engines.source.infer(source_feed)
            compute["source"] = clock() - start
        feed = {**identity, **outputs, "target_keypoints": inputs.target_keypoints[indices],
                "target_valid": inputs.target_valid[indices]}
        start = clock()
        frames = frame_engine.infer(feed)["frames"]
        compute["frame"] = clock() - start
        return compute, frames
    return frame_step


def measure_replicated(engines: EngineSet, inputs: BenchInputs, batch: int, method: Method,
                       source_out: Dict[str, np.ndarray], gpu: bool) -> Dict[str, Any]:
    """The frame stage on every replica at once, each a worker thread taking the next batch as
    soon as it is free (closed loop); throughput = all frames / wall time of the timed window."""
    steps = [make_step("frame", engines, inputs, batch, source_out, r) for r in range(len(engines.frames))]
    n_frames, lock, stop = len(inputs.target_keypoints), threading.Lock(), threading.Event()
    state = {"cursor": 0, "timing": False}
    times: List[float] = []
    compute: List[float] = []
    warm: List[float] = []

    def worker(step: Step) -> None:
        for _ in range(method.warmup):
            start = time.perf_counter()
            step(np.arange(batch) % n_frames)
            with lock:
                warm.append(time.perf_counter() - start)
        barrier.wait()
        while not stop.is_set():
            with lock:
                indices = (state["cursor"] + np.arange(batch)) % n_frames
                state["cursor"] += batch
            start = time.perf_counter()
            stage_times, _ = step(indices)
            elapsed = time.perf_counter() - start
            with lock:
                if not stop.is_set():
                    times.append(elapsed)
                    compute.append(stage_times["frame"])

    barrier = threading.Barrier(len(steps) + 1)
    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in steps]
    with MemorySampler(gpu=gpu) as memory:
        for t in threads:
            t.start()
        barrier.wait()
        began = time.perf_counter()
        while len(times) < method.min_runs or time.perf_counter() - began < method.min_seconds:
            time.sleep(0.01)
        stop.set()
        window = time.perf_counter() - began
        for t in threads:
            t.join()
    result = summarise(times, batch)
    result.update({"fps": round(batch * len(times) / window, 4), "fps_how": "all replicas' frames / wall time",
                   "warmup_ms": [round(t * 1e3, 3) for t in warm],
                   "compute_ms": {"frame": round(float(np.median(compute)) * 1e3, 3)},
                   "host_ms": round(float(np.median(np.asarray(times) - np.asarray(compute))) * 1e3, 3),
                   "queue_ms": 0.0, **memory.report()})
    return result


class ReferenceBaseline:
    """The authors' way, from the checkpoint the model was exported from: PyTorch eager FP32,
    ``FullPipeline`` (all three U-Nets) per frame at batch 1, every per-sample input (source
    heat maps, limb-mask prior, target heat maps, limb transforms) recomputed each frame, then
    ``(y + 1) * 127.5`` to uint8 BGR. The per-sample preprocessing is our vectorised torch code,
    faster than the reference's numpy loops, so the baseline is flattered, never handicapped."""

    def __init__(self, manifest: Dict[str, Any], inputs: BenchInputs, threads: int):
        checkpoint = (manifest.get("checkpoint") or {}).get("path")
        if manifest.get("family", "pose2img") != "pose2img":
            raise Skip(f"no reference baseline for model family {manifest.get('family')!r}")
        if not checkpoint or not Path(checkpoint).is_file():
            raise Skip(f"needs the checkpoint the model was exported from ({checkpoint or 'not recorded'}); "
                       "bench the checkpoint itself")
        try:
            import torch
        except ImportError:
            raise Skip("needs torch (pip install 'poserender[export]')") from None
        from .config import Pose2ImgConfig
        from .models.checkpoint import load_generator
        from .models.pose2img import FullPipeline, Pose2ImgGeometry, to_uint8_bgr

        torch.set_num_threads(threads)
        generator, _ = load_generator(checkpoint)
        geometry = Pose2ImgGeometry.from_config(Pose2ImgConfig.from_dict(manifest["config"]),
                                                manifest.get("warp_mode", "legacy"))
        self.torch, self.to_uint8 = torch, to_uint8_bgr
        self.pipeline = FullPipeline(generator, geometry).eval()
        self.fixed = [torch.from_numpy(a) for a in (inputs.image, inputs.source_keypoints, inputs.source_valid)]
        self.targets = torch.from_numpy(inputs.target_keypoints), torch.from_numpy(inputs.target_valid)

    def step(self, indices: np.ndarray) -> Tuple[Dict[str, float], np.ndarray]:
        start = time.perf_counter()
        frames = []
        with self.torch.no_grad():
            for i in indices.tolist():   # batch 1, one frame at a time
                sl = slice(i, i + 1)
                y = self.pipeline(*self.fixed, self.targets[0][sl], self.targets[1][sl])
                frames.append(self.to_uint8(y).numpy()[0])
        return {"full_forward": time.perf_counter() - start}, np.stack(frames)


# -- environment --------------------------------------------------------------------------------
VERSIONED = ("numpy", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "tensorrt", "pycuda",
             "opencv-python-headless", "av", "matplotlib", "nvidia-ml-py")


def environment(argv: Sequence[str], threads: int) -> Dict[str, Any]:
    """The machine, library versions, git commit and command line, for the result file."""
    from importlib import metadata

    from . import __version__
    from .engines.machine import cpu_model as _cpu_model, nvidia_smi

    versions = {"python": platform.python_version(), "poserender": __version__}
    for dist in VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    try:
        mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal"))
    except (OSError, StopIteration, ValueError):
        mem_kib = None
    gpus = nvidia_smi()
    return {"command_line": " ".join(_quote(a) for a in argv), "argv": list(argv), "python": sys.executable,
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git": git_state(), "cpu_model": _cpu_model(), "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "threads": threads, "ram_gib": round(mem_kib / 2 ** 20, 1) if mem_kib else None,
            "platform": platform.platform(), "gpus": gpus["gpus"], "gpu_error": gpus["error"],
            "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "versions": versions}


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(str(arg))


def git_state() -> Dict[str, Any]:
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def is_gpu_backend(backend: str) -> bool:
    from .engines import registry

    return registry.is_gpu(backend)


def _stream_support() -> Optional[str]:
    """None when the streaming runtime is importable, else why a stream cell cannot run."""
    try:
        importlib.import_module("poserender.runtime.stream")
    except ImportError as exc:
        return f"needs the streaming runtime (poserender.runtime.stream): {exc}"
    return None


def stream_files(config, inputs: BenchInputs, folder: Path) -> Dict[str, Path]:
    """The bench inputs as the files a stream reads: the source image (a frame the config crops
    and scales back to ``inputs.image``), its keypoints and the targets (.npy, image pixels)."""
    import cv2

    h, w = config.canvas_hw
    crop = cv2.resize(((inputs.image[0].transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8),
                      (config.img_w, config.img_h), interpolation=cv2.INTER_LINEAR)
    frame = np.zeros((int(config.h_bias) + config.img_h, int(config.w_bias) + config.img_w, 3), np.uint8)
    frame[int(config.h_bias):, int(config.w_bias):] = crop
    to_image = lambda xy: xy * config.scale + np.array([config.w_bias, config.h_bias])  # noqa: E731
    folder.mkdir(parents=True, exist_ok=True)
    files = {"source_image": folder / "source.png", "source_keypoints": folder / "source.npy",
             "keypoints": folder / "targets.npy"}
    cv2.imwrite(str(files["source_image"]), frame)
    np.save(files["source_keypoints"], to_image(inputs.source_keypoints[0]).T.copy())
    np.save(files["keypoints"], to_image(inputs.target_keypoints).transpose(0, 2, 1).copy())
    return files


def measure_stream(model_dir: Path, backend: str, batch: int, devices: Sequence[str], replicate: bool,
                   files: Dict[str, Path], method: Method, work: Path, gpu: bool,
                   max_frames: Optional[int] = None, precision: Optional[str] = None) -> Dict[str, Any]:
    """End to end through the streaming runtime: keypoint file -> pipeline -> H.264 mp4. One
    warm-up stream, then whole streams until ``min_seconds`` and at least 3 streams; fps per
    stream (after setup), first-frame delay from the call, per-stage compute/queue from the
    runtime's metrics (of the median stream)."""
    from . import families
    from .manifest import read_manifest
    from .runtime.pipeline import StreamOptions
    from .runtime.stream import RenderRequest, render_stream

    manifest = read_manifest(model_dir)
    family = families.of(manifest)
    request = RenderRequest(keypoints=str(files["keypoints"]), output=str(work / "stream.mp4"), backend=backend,
                            precision=precision, devices=",".join(devices) if devices else None,
                            stream=StreamOptions(batch=batch, replicate=replicate, max_frames=max_frames))
    identity = {"source": files["source_image"], "source_keypoints": files["source_keypoints"]}
    runs: List[Dict[str, Any]] = []

    def one() -> Dict[str, Any]:
        first: List[float] = []
        started = time.perf_counter()
        result = render_stream(manifest, family.adapter(manifest, identity), request, torch_stages=family.torch_stage,
                               progress=lambda done, total, fps: first or first.append(time.perf_counter()))
        report = result.report
        return {"fps": report.fps, "frames": report.counts.frames_out, "seconds": report.seconds,
                "setup_s": report.setup_seconds, "first_frame_s": (first[0] - started) if first else None,
                "stages": report.metrics.to_dict()}

    with MemorySampler(gpu=gpu) as memory:
        warm = one()
        began = time.perf_counter()
        while len(runs) < 3 or time.perf_counter() - began < method.min_seconds:
            runs.append(one())
    runs.sort(key=lambda r: r["fps"])
    median = runs[len(runs) // 2]
    stages = median["stages"]
    model_stages = [name for name in stages if name not in ("read", "prepare", "write")]
    per_frame = [1e3 / r["fps"] for r in runs]
    return {"runs": len(runs), "clipped": 0, "timed_s": round(sum(r["seconds"] for r in runs), 3),
            "frames_per_stream": median["frames"], "fps": round(median["fps"], 4),
            "fps_how": "frames / stream time after setup (median stream); includes reading keypoints and H.264",
            "latency_ms": {"p50": None, "p90": None, "p95": None, "p99": None, "mean": None},
            "latency_how": "not measured per frame in a stream; see stages: compute and queue time per stage "
                           "(p50/p90/p99 per batch, from the runtime's metrics, median stream)",
            "per_frame_ms": {"min": round(min(per_frame), 3), "median": round(float(np.median(per_frame)), 3),
                             "max": round(max(per_frame), 3)},
            "first_frame_s": {"warmup": _round(warm["first_frame_s"]),
                              "median": _round(float(np.median([r["first_frame_s"] for r in runs
                                                                if r["first_frame_s"] is not None] or [np.nan])))},
            "setup_s": _round(median["setup_s"]), "warmup_ms": [round(warm["seconds"] * 1e3, 3)],
            "compute_ms": {name: stages[name]["compute_ms"]["p50"] for name in model_stages},
            "host_ms": None, "queue_ms": round(sum(stages[n]["queue_ms"]["p50"] for n in model_stages), 3),
            "stages": stages, **memory.report()}


def _round(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None or value != value else round(float(value), digits)


# -- the run ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Grid:
    backends: List[str]
    stages: List[str] = dataclasses.field(default_factory=lambda: ["frame"])
    batches: List[int] = dataclasses.field(default_factory=lambda: [1, 4, 8])
    precisions: List[str] = dataclasses.field(default_factory=lambda: ["fp32"])
    devices: List[str] = dataclasses.field(default_factory=list)
    replicate: bool = False


class GraphFlops:
    """FLOPs per frame of a model's cells from its ONNX graphs, counted once per (stage, batch)."""

    def __init__(self, model_dir: Path, manifest: Dict[str, Any]):
        self.files = {s["name"]: Path(model_dir) / s["file"] for s in manifest["stages"]}
        self.cache: Dict[Tuple[str, int], Dict[str, Any]] = {}

    def count(self, stage: str, batch: int) -> Dict[str, Any]:
        from .flops import onnx_graph_flops

        if (stage, batch) not in self.cache:
            self.cache[stage, batch] = onnx_graph_flops(self.files[stage], batch)
        return self.cache[stage, batch]

    def per_frame(self, stage: str, batch: int) -> float:
        """source: per identity; frame: per frame; all: (source + B frames) / B."""
        if stage == "all":
            return (self.count("source", 1)["flops"] + self.count("frame", batch)["flops"]) / batch
        return self.count(stage, batch)["flops_per_item"]


def _row(backend: str, stage: str, batch: Any, precision: str, canvas: Sequence[int], layout: str,
         **fields: Any) -> Dict[str, Any]:
    return {"backend": backend, "stage": stage, "batch": batch, "precision": precision,
            "canvas": f"{canvas[0]}x{canvas[1]}" if canvas else "*", "layout": layout, **fields}


def run_cell(stage: str, batch: int, engines: EngineSet, inputs: BenchInputs, method: Method,
             source_out: Dict[str, np.ndarray], frames_out: Dict[int, np.ndarray],
             graph_flops: GraphFlops) -> Dict[str, Any]:
    if stage == "stream":
        raise Skip("internal: stream cells run through run_stream_cell")
    spec = (engines.source if stage == "source" else engines.frames[0]).spec
    if batch > spec.max_batch:
        raise Skip(f"the {spec.name} stage takes batch <= {spec.max_batch} (manifest.json)")
    gpu = is_gpu_backend(engines.backend)
    counted: Dict[str, Any] = {}
    if len(engines.frames) > 1:
        if stage != "frame":
            raise Skip("--replicate replicates the frame stage; bench it with --stage frame")
        result = measure_replicated(engines, inputs, batch, method, source_out, gpu)
    else:
        def count_torch(step: Step, indices: np.ndarray) -> None:
            from .flops import torch_call_flops
            counted["flops"] = torch_call_flops(lambda: step(indices))[1] / batch

        result = measure(make_step(stage, engines, inputs, batch, source_out), batch, len(inputs.target_keypoints),
                         method, None if stage == "source" else frames_out, gpu,
                         count_torch if engines.backend.startswith("torch") else None)
    if "flops" in counted:
        result.update(flops_per_frame=counted["flops"], flops_from="torch FlopCounterMode, one call of this cell")
    else:
        result.update(flops_per_frame=graph_flops.per_frame(stage, batch), flops_from="ONNX graph")
    result["transfer_ms"] = None if not gpu else "inside compute: engines take and return host arrays"
    return result


def run_stream_cells(model_dir: Path, manifest: Dict[str, Any], backend: str, precision: str, layout: Tuple,
                     grid: Grid, inputs: BenchInputs, method: Method, inputs_from: Dict[str, Any],
                     graph_flops: GraphFlops, log: Callable[[str], None]) -> List[Dict[str, Any]]:
    import tempfile

    from .config import Pose2ImgConfig

    canvas = list(manifest["canvas"])
    rows = []
    why = _stream_support()
    model_precision = manifest.get("precision", "fp32")
    with tempfile.TemporaryDirectory(prefix="poserender-bench-stream-") as tmp:
        files = None
        if why is None:
            given = {k: inputs_from.get(k) for k in ("source", "source_keypoints", "keypoints")}
            files = ({"source_image": Path(given["source"]), "source_keypoints": Path(given["source_keypoints"]),
                      "keypoints": Path(given["keypoints"])} if all(given.values())
                     else stream_files(Pose2ImgConfig.from_dict(manifest["config"]), inputs, Path(tmp) / "inputs"))
        for batch in grid.batches:
            key = (backend, "stream", batch, precision, canvas, layout[0])
            if why is not None:
                rows.append(_row(*key, status="skipped", reason=why))
                continue
            log(f"timing {backend} stream, batch {batch}, {layout[0]}")
            try:
                cell = measure_stream(model_dir, backend, batch, grid.devices, grid.replicate, files, method,
                                      Path(tmp), is_gpu_backend(backend), inputs_from.get("frames"),
                                      None if precision == model_precision else precision)
            except UserError as exc:
                rows.append(_row(*key, status="skipped", reason=str(exc)))
                continue
            cell.update(flops_per_frame=graph_flops.per_frame("frame", batch), flops_from="ONNX graph (frame stage)",
                        transfer_ms=None)
            rows.append(_row(*key, status="ok", **cell))
    return rows


def run_bench(models: Sequence[Tuple[Path, Dict[str, Any]]], grid: Grid, method: Method,
              inputs_from: Optional[Dict[str, Any]] = None, baseline: Optional[str] = None,
              peak_seconds: float = 2.0, argv: Sequence[str] = (), skipped_models: Sequence[Tuple[str, str]] = (),
              log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Measure every cell of ``grid`` for each (model_dir, manifest); returns the result dict
    (environment, method, FLOPs, machine peak, rows). Rows of cells that cannot run here have
    ``status: skipped`` and the reason."""
    from .config import Pose2ImgConfig
    from .flops import COUNTED, matmul_peak

    method.check()
    started = time.perf_counter()
    env = environment(argv, method.threads)
    status = backend_status(grid.backends)
    rows: List[Dict[str, Any]] = [_row("*", "*", "*", "*", (), "*", status="skipped", reason=reason,
                                       resolution=label) for label, reason in skipped_models]
    flops_summary: Dict[str, Any] = {}
    for model_dir, manifest in models:
        canvas = list(manifest["canvas"])
        inputs = load_inputs(Pose2ImgConfig.from_dict(manifest["config"]), **(inputs_from or {}))
        graph_flops = GraphFlops(model_dir, manifest)
        flops_summary[f"{canvas[0]}x{canvas[1]}"] = {
            name: {k: v for k, v in graph_flops.count(name, 1).items() if k != "counted"} for name in graph_flops.files}
        model_rows: List[Dict[str, Any]] = []
        reference: Dict[int, np.ndarray] = {}
        cell_frames: Dict[Tuple, Dict[int, np.ndarray]] = {}
        if baseline:
            model_rows.append(_baseline_row(manifest, inputs, method, reference, canvas, log))
        for backend in grid.backends:
            usable, why = status[backend]
            if not usable:
                model_rows.append(_row(backend, "*", "*", "*", canvas, "*", status="skipped", reason=why))
                continue
            if backend.startswith("torch"):
                _torch_threads(method.threads)
            for precision in grid.precisions:
                for layout in layouts(grid.devices, grid.replicate):
                    try:
                        engines = open_engines(model_dir, manifest, backend, precision, layout, method.threads)
                    except Skip as exc:
                        model_rows.append(_row(backend, "*", "*", precision, canvas, layout[0], status="skipped",
                                               reason=str(exc)))
                        continue
                    try:
                        source_out = engines.source.infer(inputs.source_feed(1))
                        for stage in [s for s in grid.stages if s != "stream"]:
                            for batch in grid.batches:
                                key = (backend, stage, batch, precision, canvas, engines.layout)
                                try:
                                    log(f"timing {backend} {stage} stage, batch {batch}, {precision}, {engines.layout}")
                                    frames: Dict[int, np.ndarray] = {}
                                    cell = run_cell(stage, batch, engines, inputs, method, source_out, frames,
                                                    graph_flops)
                                except Skip as exc:
                                    model_rows.append(_row(*key, status="skipped", reason=str(exc)))
                                    continue
                                if reference and frames:
                                    cell["frames_vs_baseline"] = frame_agreement(reference, frames)
                                model_rows.append(_row(*key, status="ok", **cell))
                                cell_frames[(backend, stage, batch, precision, engines.layout)] = frames
                    finally:
                        for engine in engines.all():
                            engine.deactivate()
                    if "stream" in grid.stages:   # engines are freed: the stream builds its own
                        model_rows.extend(run_stream_cells(model_dir, manifest, backend, precision, layout, grid,
                                                           inputs, method, inputs_from or {}, graph_flops, log))
        compare_precisions(model_rows, cell_frames, manifest)
        rows.extend(model_rows)
    peak = matmul_peak(method.threads, peak_seconds) if peak_seconds > 0 else {"gflops": None,
                                                                               "how": "not measured"}
    derive(rows, peak.get("gflops"))
    env["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {"schema": "poserender-bench/1", "environment": env,
            "method": {**dataclasses.asdict(method), "outliers": OUTLIER_RULE, "clock": "time.perf_counter",
                       "latency": "per call (one batch), percentiles of the kept calls",
                       "fps": "frames / total kept call time (replicated: all frames / wall time)",
                       "compute_vs_host": "compute = engine.infer per stage; host = rest of the call; "
                                          "queue = 0 (no queues in a synchronous cell)",
                       "frames_check": f"frames vs the baseline's: within {GUARD_LEVELS} levels on >= "
                                       f"{GUARD_FRACTION:.1%} of pixels"},
            "grid": dataclasses.asdict(grid), "baseline": baseline, "inputs": inputs.described if models else {},
            "models": [_model_info(d, m) for d, m in models],
            "flops": {"counted": COUNTED, "per_stage_at_batch_1": flops_summary},
            "machine_peak": peak, "rows": rows, "wall_s": round(time.perf_counter() - started, 1)}


def _baseline_row(manifest: Dict[str, Any], inputs: BenchInputs, method: Method, reference: Dict[int, np.ndarray],
                  canvas: Sequence[int], log: Callable[[str], None]) -> Dict[str, Any]:
    key = ("reference", "full", 1, "fp32", canvas, "default")
    try:
        base = ReferenceBaseline(manifest, inputs, method.threads)
    except Skip as exc:
        return _row(*key, status="skipped", reason=str(exc), is_baseline=True)
    from .flops import torch_call_flops

    counted: Dict[str, float] = {}

    def count(step: Step, indices: np.ndarray) -> None:
        counted["flops"] = torch_call_flops(lambda: step(indices))[1]

    log("timing the reference baseline: torch eager FP32, full forward per frame, batch 1")
    cell = measure(base.step, 1, len(inputs.target_keypoints), method, reference, False, count)
    for i in range(min(method.compare_frames, len(inputs.target_keypoints))):   # untimed: for the checks
        if i not in reference:
            reference[i] = base.step(np.array([i]))[1][0]
    return _row(*key, status="ok", is_baseline=True, flops_per_frame=counted["flops"],
                flops_from="torch FlopCounterMode, one call", transfer_ms=None, **cell)


def compare_precisions(rows: List[Dict[str, Any]], cell_frames: Dict[Tuple, Dict[int, np.ndarray]],
                       manifest: Dict[str, Any]) -> None:
    """Reduced-precision rows side by side with FP32: ``speedup_vs_fp32`` (fps over the fp32 row
    of the same backend, stage, batch and layout in this run), ``quality_vs_fp32`` (PSNR, SSIM,
    max abs error of the frames both rendered for the same targets, measured here) and, for
    int8, the export's gate record (``int8_gate``, held-out frames, from manifest.json)."""
    ok = {(r["backend"], r["stage"], r["batch"], r["precision"], r["layout"]): r for r in rows if r["status"] == "ok"}
    gate_record = (manifest.get("int8") or {}).get("quality")
    for key, row in ok.items():
        backend, stage, batch, precision, layout = key
        if precision == "fp32" or row.get("is_baseline"):
            continue
        if precision == "int8" and gate_record:
            row["int8_gate"] = {k: gate_record.get(k) for k in ("psnr_db", "ssim", "max_abs_error", "frames")}
            row["int8_gate"].update(method=(manifest["int8"].get("calibration") or {}).get("method"),
                                    passed=(manifest["int8"].get("gate") or {}).get("passed"))
        fp32 = ok.get((backend, stage, batch, "fp32", layout))
        if fp32 is None:
            row["speedup_vs_fp32"] = None
            row["quality_vs_fp32"] = {"note": "no fp32 cell of this backend/stage/batch in the run "
                                               "(add fp32 to --precision)"}
            continue
        row["speedup_vs_fp32"] = round(row["fps"] / fp32["fps"], 3)
        ref, got = cell_frames.get((backend, stage, batch, "fp32", layout)), cell_frames.get(key)
        common = sorted(set(ref or {}) & set(got or {}))
        if not common:
            row["quality_vs_fp32"] = {"note": "no frames to compare (stream or source cell)"}
            continue
        from .export.quality import frame_quality      # numpy + OpenCV only

        quality = frame_quality(np.stack([ref[i] for i in common]), np.stack([got[i] for i in common]))
        row["quality_vs_fp32"] = {**quality, "frame_indices": common}


def derive(rows: List[Dict[str, Any]], peak_gflops: Optional[float]) -> None:
    """Achieved GFLOP/s, fraction of the CPU matmul peak, and speed-up over the baseline of the
    same canvas (frames/s ratio; not for source-stage rows, which count identities)."""
    base = {r["canvas"]: r["fps"] for r in rows if r.get("is_baseline") and r["status"] == "ok"}
    for row in rows:
        if row["status"] != "ok":
            continue
        row["achieved_gflops"] = round(row["flops_per_frame"] * row["fps"] / 1e9, 2)
        on_cpu = not is_gpu_backend(row["backend"])
        row["peak_fraction"] = round(row["achieved_gflops"] / peak_gflops, 4) if on_cpu and peak_gflops else None
        row["speedup"] = round(row["fps"] / base[row["canvas"]], 3) \
            if row["canvas"] in base and row["stage"] != "source" else None


def _model_info(model_dir: Path, manifest: Dict[str, Any]) -> Dict[str, Any]:
    checkpoint = manifest.get("checkpoint") or {}
    return {"dir": str(model_dir), "family": manifest.get("family"), "canvas": manifest.get("canvas"),
            "width": manifest.get("width"), "precision": manifest.get("precision", "fp32"),
            "warp_mode": manifest.get("warp_mode"), "graph_rewrites": manifest.get("graph_rewrites", []),
            "checkpoint": checkpoint.get("path"), "checkpoint_sha256": checkpoint.get("sha256"),
            "checkpoint_meta": checkpoint.get("meta", {}),
            "onnx_mib": {s["file"]: round((Path(model_dir) / s["file"]).stat().st_size / 2 ** 20, 1)
                         for s in manifest["stages"]}}


def _torch_threads(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
