"""``poserender triton-client``: a keypoint file -> the Triton ensemble over gRPC -> a video.

The runtime's pieces are reused as they are: the keypoint source (``runtime.sources``), the
family's adapter (``runtime.adapters``: identity inputs read and checked, keypoints mapped onto
the canvas, frames stacked into a batch), the bad-frame policy and the sinks. The one
difference from ``poserender render``: the identity stage runs on the server, inside the
ensemble, so its inputs travel with every request instead of its outputs being kept here
(:class:`IdentityCapture` takes them from the adapter).

A request is one identity and up to ``--batch`` frames (the frame stage's batch range): its
tensors are checked against the ensemble's config (:func:`build_request`, a pure function)
before anything is sent. The server connection is a small transport protocol
(``get_model_config``, ``infer``): :class:`GrpcTransport` wraps ``tritonclient.grpc``
(imported when used), :class:`poserender.triton.local.LocalTriton` serves a repository from
this process with ONNX Runtime, and tests pass fakes.
"""
from __future__ import annotations

import dataclasses
import json
import re
import types
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from ..errors import UserError
from .contract import CLIENT_PARAMETER, ENSEMBLE_PLATFORM

NUMPY_DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_FP64": np.float64, "TYPE_UINT8": np.uint8,
                "TYPE_INT8": np.int8, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64, "TYPE_BOOL": np.bool_}
INSTALL_HINT = ("the Triton client is not installed: pip install \"tritonclient[grpc]\" "
                "(or pip install \"poserender[triton]\")")
Request = List[Tuple[str, np.ndarray]]


# --- tensor contracts ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorContract:
    """One input or output of a model config, as a request must meet it (Triton's checks)."""

    name: str
    data_type: str                 # TYPE_FP32, ...
    dims: Tuple[int, ...]          # without the batch axis when max_batch > 0
    max_batch: int = 0

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(NUMPY_DTYPES[self.data_type])

    @property
    def wire_dtype(self) -> str:
        """The datatype string of the inference protocol ("FP32", "UINT8", ...)."""
        return self.data_type[len("TYPE_"):]

    def expected(self) -> List[Union[int, str]]:
        shape: List[Union[int, str]] = [f"1..{self.max_batch}"] if self.max_batch else []
        return shape + ["any" if d == -1 else d for d in self.dims]

    def check(self, array: np.ndarray, model: str) -> None:
        if array.dtype != self.np_dtype:
            raise ValueError(f"{model}: input {self.name!r} is {array.dtype}; the config says {self.data_type}")
        shape = list(array.shape)
        if self.max_batch:
            if not shape or not 1 <= shape[0] <= self.max_batch:
                raise ValueError(f"{model}: input {self.name!r} shape {tuple(shape)}; expected {self.expected()}")
            shape = shape[1:]
        if len(shape) != len(self.dims) or any(d != -1 and d != n for d, n in zip(self.dims, shape)):
            raise ValueError(f"{model}: input {self.name!r} shape {tuple(array.shape)}; expected {self.expected()}")


def contracts(config) -> Tuple[List[TensorContract], List[TensorContract]]:
    """(inputs, outputs) of a parsed ModelConfig as TensorContracts."""
    from .validate import dtype_name

    def one(t) -> TensorContract:
        return TensorContract(t.name, dtype_name(t.data_type), tuple(int(d) for d in t.dims), int(config.max_batch_size))
    return [one(t) for t in config.input], [one(t) for t in config.output]


def build_request(feed: Mapping[str, np.ndarray], config) -> Request:
    """The ensemble's inputs taken from ``feed``, in config order, each checked against its
    contract (name, dtype, shape); every frame input must hold the same number of frames.
    Raises ValueError naming the tensor when the feed does not fit the config."""
    inputs, _ = contracts(config)
    names = [c.name for c in inputs]
    missing = [n for n in names if n not in feed]
    if missing:
        raise ValueError(f"{config.name}: the request lacks inputs {missing}; the ensemble takes {names}")
    request, frames = [], {}
    for contract in inputs:
        array = np.ascontiguousarray(feed[contract.name])
        contract.check(array, config.name)
        if not contract.max_batch and contract.dims and contract.dims[0] == -1:
            frames[contract.name] = array.shape[0]
        request.append((contract.name, array))
    if len(set(frames.values())) > 1:
        raise ValueError(f"{config.name}: frame inputs disagree on the number of frames: {frames}")
    return request


def client_metadata(config) -> Dict[str, Any]:
    """The poserender metadata stored in the ensemble's parameters (family, canvas, config...)."""
    if config.platform != ENSEMBLE_PLATFORM:
        raise UserError(f"model {config.name!r} is a {config.platform} model; --model must name the ensemble of a "
                        "repository written by `poserender triton` (the folder holding ensemble_scheduling)")
    if CLIENT_PARAMETER not in config.parameters:
        raise UserError(f"ensemble {config.name!r} has no {CLIENT_PARAMETER!r} parameter; expected a repository "
                        "written by `poserender triton`")
    try:
        meta = json.loads(config.parameters[CLIENT_PARAMETER].string_value)
        for key in ("family", "canvas", "config", "frame_max_batch"):
            meta[key]
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"ensemble {config.name!r}: the {CLIENT_PARAMETER!r} parameter is not poserender's "
                        f"metadata ({exc})") from None
    return meta


def identity_inputs(adapter) -> Dict[str, np.ndarray]:
    """The identity inputs the ensemble needs with every request (the server runs the identity stage)."""
    return adapter.identity_feed()


class RemoteAdapter:
    """The family's adapter as the pipeline sees it when the model runs on a server: no identity
    stage here (the ensemble runs it), one per-frame stage, the ensemble, whose feed is the frame
    batch plus the identity inputs."""

    identity_stages: Tuple[str, ...] = ()
    frame_stages = ("ensemble",)

    def __init__(self, adapter):
        self.inner, self.family, self.canvas_hw = adapter, adapter.family, adapter.canvas_hw
        self._identity = identity_inputs(adapter)

    def open_file(self, path: Path, fps: float):
        return self.inner.open_file(path, fps)

    def normalise(self, frame):
        return self.inner.normalise(frame)

    def run_identity(self, engines) -> None:
        """Nothing to run here: the identity inputs travel with every request."""

    def prepare(self, frames) -> Dict[str, np.ndarray]:
        return {**self._identity, **self.inner.frame_feed(frames)}

    def frames(self, feed: Dict[str, np.ndarray]) -> np.ndarray:
        return feed["frames"]


class EnsembleEngine:
    """One request to the ensemble per batch, as the pipeline's engine of the ``ensemble`` stage:
    the feed is checked against the ensemble's config (:func:`build_request`) before it is sent,
    and the frames that come back against the canvas."""

    backend = "triton"

    def __init__(self, transport: "Transport", model: str, config, canvas: Tuple[int, int]):
        self.transport, self.model, self.config, self.canvas = transport, model, config, canvas
        self.spec = types.SimpleNamespace(name="ensemble")
        self.requests = 0

    def __enter__(self) -> "EnsembleEngine":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def infer(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        n = len(feed["target_keypoints"])
        frames = self.transport.infer(self.model, build_request(feed, self.config), ["frames"])["frames"]
        self.requests += 1
        height, width = self.canvas
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.shape != (n, height, width, 3):
            got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
            raise UserError(f"Triton returned frames {got} for a request of {n}; expected uint8 ({n}, {height}, "
                            f"{width}, 3)")
        return {"frames": frames}


# --- transports ---------------------------------------------------------------------------------

class Transport(Protocol):
    def get_model_config(self, model: str): ...

    def infer(self, model: str, inputs: Request, outputs: Sequence[str]) -> Dict[str, np.ndarray]: ...


def check_url(url: str) -> str:
    """``HOST:PORT`` of Triton's gRPC endpoint (default port 8001); no scheme."""
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})", url or "")
    if not match or int(match.group(2)) > 65535:
        raise UserError(f"--url {url!r}; expected HOST:PORT of Triton's gRPC endpoint, e.g. localhost:8001")
    return url


def grpc_inputs(grpcclient, request: Request) -> list:
    """tritonclient.grpc InferInput objects for a checked request."""
    wire_of = {np.dtype(v): k[len("TYPE_"):] for k, v in NUMPY_DTYPES.items()}
    out = []
    for name, array in request:
        wire = wire_of[array.dtype]
        item = grpcclient.InferInput(name, list(array.shape), wire)
        item.set_data_from_numpy(array)
        out.append(item)
    return out


class GrpcTransport:
    """Triton over gRPC with ``tritonclient.grpc`` (``client`` may be given, e.g. in tests)."""

    def __init__(self, url: str, client=None, timeout_s: Optional[float] = None):
        try:
            import tritonclient.grpc as grpcclient
        except ImportError:
            raise UserError(INSTALL_HINT) from None
        self.url, self.timeout_s, self._grpc = url, timeout_s, grpcclient
        self.client = client if client is not None else grpcclient.InferenceServerClient(url=check_url(url))

    def _errors(self):
        from tritonclient.utils import InferenceServerException
        return InferenceServerException

    def get_model_config(self, model: str):
        try:
            return self.client.get_model_config(model).config
        except self._errors() as exc:
            raise UserError(f"Triton at {self.url}: cannot get the config of model {model!r} "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); is the server up "
                            "and the model loaded?") from None

    def infer(self, model: str, inputs: Request, outputs: Sequence[str]) -> Dict[str, np.ndarray]:
        grpcclient = self._grpc
        try:
            result = self.client.infer(model, grpc_inputs(grpcclient, inputs),
                                       outputs=[grpcclient.InferRequestedOutput(n) for n in outputs],
                                       client_timeout=self.timeout_s)
        except self._errors() as exc:
            raise UserError(f"Triton at {self.url}: inference on {model!r} failed "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        arrays = {}
        for name in outputs:
            try:
                arrays[name] = result.as_numpy(name)
            except ValueError as exc:        # the bytes sent do not fill the shape the response states
                raise UserError(f"Triton at {self.url}: {model!r} returned output {name!r} with too few bytes "
                                f"for its shape ({exc})") from None
            if arrays[name] is None:
                raise UserError(f"Triton at {self.url}: {model!r} returned no output {name!r}")
        return arrays


# --- the streaming loop -------------------------------------------------------------------------

@dataclasses.dataclass
class ClientReport:
    counts: Any                     # runtime.policy.StreamCounts
    requests: int
    seconds: float
    sink: Any
    batch: int
    interrupted: bool = False
    exit_code: int = 0

    @property
    def fps(self) -> float:
        return self.counts.frames_out / self.seconds if self.seconds > 0 else 0.0


def stream_through_ensemble(transport: Transport, model: str, keypoints: Union[str, Path], output: Union[str, Path], *,
                            source_image: Optional[Path] = None, source_keypoints: Optional[Path] = None,
                            source_parsing: Optional[Path] = None, batch: int = 4, concurrency: int = 2,
                            fps: float = 15.0, fmt: Optional[str] = None, audio: Optional[Path] = None,
                            on_bad_frame: str = "hold", max_frames: Optional[int] = None,
                            log: Callable[[str], None] = lambda s: None,
                            progress: Callable[[int, Optional[int], float], None] = lambda done, total, fps: None
                            ) -> ClientReport:
    """Send ``keypoints`` through ensemble ``model`` in requests of ``batch`` frames, at most
    ``concurrency`` in flight, and write the frames in order to ``output``: the streaming pipeline
    (runtime.pipeline) with the ensemble as its one per-frame stage, one worker per request in
    flight. Everything the user gave is opened and checked before the first request; bad frames
    follow ``on_bad_frame``, a signal finishes the requests in flight and closes the output."""
    from .. import families
    from ..runtime.pipeline import StreamPipeline
    from ..runtime.report import StreamOptions
    from ..runtime.sinks import open_sink
    from ..runtime.live import open_source

    if batch < 1 or concurrency < 1:
        raise UserError(f"--batch {batch} and --concurrency {concurrency} must be at least 1")
    config = transport.get_model_config(model)
    meta = client_metadata(config)
    _, outputs = contracts(config)
    if [o.name for o in outputs] != ["frames"]:
        raise UserError(f"ensemble {model!r} outputs {[o.name for o in outputs]}; expected frames")
    family = families.get(meta["family"])
    given = {"source": source_image, "source_keypoints": source_keypoints, "source_parsing": source_parsing}
    identity = family.check_identity(given, families.others(family))
    adapter = RemoteAdapter(family.adapter(meta, identity, warn=lambda message: log(f"poserender: warning: {message}")))
    height, width = (int(v) for v in meta["canvas"])
    engine = EnsembleEngine(transport, model, config, (height, width))
    options = StreamOptions(batch=max(1, min(batch, int(meta["frame_max_batch"]))), on_bad_frame=on_bad_frame,
                            devices=("cpu",) * concurrency, replicate=concurrency > 1, fps=fps,
                            max_frames=max_frames)
    source = open_source(str(keypoints), adapter.open_file, fps, log=log)
    try:
        sink = open_sink(output, fmt, fps=fps, audio=audio)
        try:
            pipeline = StreamPipeline(adapter, lambda device, threads: {"ensemble": engine}, source, sink, options,
                                      log=log, progress=progress)
            report = pipeline.run()
        except BaseException:
            sink.abort()
            raise
    finally:
        source.close()
    return ClientReport(report.counts, engine.requests, report.seconds, report.sink, options.batch,
                        report.interrupted, report.exit_code)
