"""The one interface a model family implements, and the small records it hands to the generic code.

A family is everything that differs between Pose2Img and PSC (and the next one): how a checkpoint
is recognised and traced into stages, which stages run once per identity and which per frame,
what the identity inputs are and how they are read, how a keypoint frame is mapped onto the
canvas (the runtime adapter), which part INT8 may quantize, and which realistic inputs verify
a stage. Everything else is generic and lives once: the export loop (export/exporter.py), the
engines and their registry, the streaming pipeline, INT8 calibration, the Triton repository,
bench, verify and build all read a family only through this interface (docs/architecture.md).

Nothing here imports torch: a family's module imports it inside the methods that trace or load
checkpoints, so rendering an exported model needs only numpy, ONNX Runtime and OpenCV.
"""
from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import UserError
from ..specs import StageSpec

Feed = Dict[str, np.ndarray]
Log = Callable[[str], None]
Warn = Callable[[str], None]
#: the identity feed and one frame's feed in, that frame out as uint8 BGR (Family.reference_forward)
ReferenceForward = Callable[[Feed, Feed], np.ndarray]


@dataclasses.dataclass(frozen=True)
class IdentityInput:
    """One per-identity input of a family, as the CLI names it (``--source-keypoints``)."""

    key: str            # keyword in the identity mapping: "source", "source_keypoints", ...
    help: str

    @property
    def option(self) -> str:
        return "--" + self.key.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class Int8Plan:
    """Which stage INT8 may quantize, and which part of it (ONNX node-name prefixes of the trunk)."""

    stage: str
    trunk: Tuple[str, ...]
    heads_outside_trunk: bool = False          # the trunk prefixes hold no output head of their own
    fp32_ops: Mapping[str, str] = dataclasses.field(default_factory=dict)   # op type -> manifest group
    fp32_stages_why: str = ""                  # recorded in the manifest


@dataclasses.dataclass
class ExportStage:
    """One stage to trace and verify.

    ``deploy`` is traced into the graph, ``reference`` is what the graph is verified against
    (often the same module; Pose2Img traces an exactly rewritten copy). ``feed(outputs)`` gives
    the stage's verification inputs from the reference outputs of the stages before it (keyed by
    stage name); ``accept(feed, ref, got, report)`` decides whether ONNX Runtime's outputs agree
    (None: the default tolerances of export.verify.passes) and may return extra report fields.
    """

    spec: StageSpec
    deploy: Any
    reference: Any
    feed: Callable[[Mapping[str, Feed]], Feed]
    accept: Optional[Callable[[Feed, Feed, Feed, Dict[str, Any]], Tuple[bool, Dict[str, Any]]]] = None


@dataclasses.dataclass
class ExportPlan:
    """What one checkpoint exports to: the stages, and the family's own manifest fields.

    ``finish(manifest, work_dir)`` may add fields once every graph is written (e.g. the names of
    the layers a reduced-precision build must keep in FP32)."""

    stages: List[ExportStage]
    manifest: Dict[str, Any]
    finish: Optional[Callable[[Dict[str, Any], Path], None]] = None


@dataclasses.dataclass
class RenderMode:
    """A family's own way to render, selected by its options (PSC: --psc-data, --key-poses).

    Either ``run(manifest, identity, request, log, progress) -> summary lines`` renders by itself (not a
    stream), or ``source(manifest, identity, request, log) -> (FrameSource, note)`` makes the poses
    that then stream through the pipeline like any keypoint file. ``stream_options`` are the
    stream-only options (render's STREAM_OPTIONS keys) the mode accepts."""

    option: str
    run: Optional[Callable[..., List[str]]] = None
    source: Optional[Callable[..., Tuple[Any, Optional[str]]]] = None
    stream_options: Tuple[str, ...] = ()


@dataclasses.dataclass
class TrainingPlan:
    """A family's training run, for the generic runner of ``poserender train``: ``build(say,
    on_step, ctx)`` makes the trainer (its ``fit()`` runs it), ``describe(trainer)`` says what it
    trains on, ``finished(result, seconds)`` what it wrote."""

    label: str
    batch_size: int
    build: Callable[..., Any]
    describe: Callable[[Any], str]
    finished: Callable[[Dict[str, Any], float], str]


class Family(abc.ABC):
    """A model family. Subclasses set the class attributes and implement the methods."""

    #: the manifest's ``family`` value and the name users type (``export --model NAME``)
    name: str = ""
    #: per-identity inputs, in the order they are asked for
    identity_inputs: Tuple[IdentityInput, ...] = ()
    #: stages run once per identity, then the per-frame stages in order (others are auxiliary)
    identity_stages: Tuple[str, ...] = ()
    frame_stages: Tuple[str, ...] = ()
    #: export options this family takes (the CLI's names, without dashes: "config", "aa_norm", ...)
    export_options: Tuple[str, ...] = ()
    #: options of this family's own render modes (``render_mode``)
    render_options: Tuple[str, ...] = ()
    #: INT8: the quantizable stage and its trunk (None: the family has no INT8 export)
    int8: Optional[Int8Plan] = None

    # -- checkpoints and export -------------------------------------------------------------------

    @abc.abstractmethod
    def is_checkpoint(self, path: Path) -> bool:
        """True when ``path`` is a checkpoint of this family (used by ``--model auto``)."""

    @abc.abstractmethod
    def export_plan(self, checkpoint: Path, options: Mapping[str, Any], log: Log) -> ExportPlan:
        """Load ``checkpoint`` and describe its stages; ``options`` holds this family's export options."""

    def cache_key(self, checkpoint: Path, options: Mapping[str, Any]) -> List[str]:
        """What identifies an export of ``checkpoint`` with ``options`` (for the checkpoint cache)."""
        from ..manifest import sha256_file

        path = Path(checkpoint)
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        return [self.name] + [sha256_file(p) for p in files] + [f"{k}={options.get(k)}" for k in self.export_options]

    # -- running an exported model ---------------------------------------------------------------

    @abc.abstractmethod
    def adapter(self, manifest: Mapping[str, Any], identity: Mapping[str, Path], warn: Warn = lambda m: None):
        """The runtime adapter (runtime.adapters.ModelAdapter) with the identity inputs read and checked."""

    @abc.abstractmethod
    def torch_stage(self, manifest: Mapping[str, Any], stage_name: str):
        """The torch module of one stage, rebuilt from the checkpoint the manifest records."""

    def render_mode(self, options: Mapping[str, Any], model_dir: Path) -> Optional[RenderMode]:
        """The render mode ``options`` (the given family render options) select, or None for the
        pose stream every family has. The default refuses any option: it belongs to another family."""
        self._refuse_foreign(options, "render_options")
        return None

    def training(self, options: Mapping[str, Any]) -> TrainingPlan:
        """The training run ``options`` (the family's ``poserender train`` options) describe."""
        raise UserError(f"poserender has no trainer for {self.name} models")

    def describe(self, manifest: Mapping[str, Any]) -> str:
        """A few words on what sets this export apart, for the export's summary line."""
        return ""

    def reference_forward(self, manifest: Mapping[str, Any], threads: int) -> Optional[ReferenceForward]:
        """The authors' way of running the model, for ``bench --baseline reference``: a function of
        the identity feed and one frame's feed (batch 1) that returns that frame as uint8 BGR (H, W,
        3), or None when the family has no such baseline. A reason it cannot run here (no
        checkpoint, no torch) is a UserError, which bench shows as a skipped row."""
        return None

    def verification_inputs(self, manifest: Mapping[str, Any]) -> Feed:
        """Realistic values for stage inputs (a smooth image, template poses) by tensor name, for
        build, verify and bench; inputs not named here get random normals."""
        return {}

    # -- shared checks ------------------------------------------------------------------------------

    @property
    def stage_names(self) -> Tuple[str, ...]:
        return self.identity_stages + self.frame_stages

    def check_identity(self, given: Mapping[str, Optional[Path]], others: Sequence["Family"] = ()) -> Dict[str, Path]:
        """The identity inputs this family needs, from everything the user gave; one line for a
        missing one, or for one that belongs to another family."""
        mine = {i.key for i in self.identity_inputs}
        stray = [k for k, v in given.items() if v is not None and k not in mine]
        if stray:
            owners = sorted({f.name for f in others for i in f.identity_inputs if i.key in stray})
            option = "--" + stray[0].replace("_", "-")
            belongs = f" is for {' and '.join(owners)} models" if owners else " is not an input of this model"
            raise UserError(f"{option}{belongs}; a {self.name} model takes "
                            f"{', '.join(i.option for i in self.identity_inputs)}")
        missing = [i.option for i in self.identity_inputs if given.get(i.key) is None]
        if missing:
            wanted = [f"{i.option} ({i.help})" for i in self.identity_inputs]
            wanted = ", ".join(wanted[:-1]) + " and " + wanted[-1] if len(wanted) > 1 else wanted[0]
            raise UserError(f"a {self.name} model needs {wanted}; missing {', '.join(missing)}")
        return {i.key: Path(given[i.key]) for i in self.identity_inputs}

    def check_export_options(self, given: Mapping[str, Any]) -> None:
        self._refuse_foreign(given, "export_options")

    def _refuse_foreign(self, given: Mapping[str, Any], kind: str) -> None:
        """One line for options (``kind``: export_options or render_options) this family does not take."""
        from . import FAMILIES

        stray = [k for k, v in given.items() if v not in (None, False, ()) and k not in getattr(self, kind)]
        if not stray:
            return
        owners = sorted({f.name for f in FAMILIES.values() if f is not self and set(stray) & set(getattr(f, kind))})
        options = ", ".join("--" + k.replace("_", "-") for k in stray)
        raise UserError(f"{options} apply to {' and '.join(owners) or 'other'} models; this is a {self.name} model")

    def __repr__(self) -> str:
        return f"<family {self.name}>"
