"""Measuring code of ``poserender bench`` and ``benchmarks/``: a grid of cells, each timed the same way.

A cell is one (backend, stage, batch, precision, canvas, device layout) of one exported model of
any family; the stages a cell runs and the inputs it feeds come from the family
(``families.of(manifest)``) and its runtime adapter, never from a family's name. One idea per
module:

=================  ===========================================================================
``grid``           the grid and its options: backends, precisions, batches, stages, layout
``run``            running it: per model, per engine set, the cells and derived rows
``inputs``         what a model is fed: the user's files through the family's adapter, or the
                   family's verification inputs
``cells``          one synchronous cell: engines, the step of one call, timing it
``stream_cells``   whole streams through the streaming runtime (``render_stream``)
``timing``         the closed timing loops (one, or one per replica)
``stats``          the method, outlier clipping, percentiles, frame checks
``cellflops``      FLOPs per frame of a cell (ONNX graphs, or torch's counter)
``rows``           result rows, speed-ups and reduced precision beside FP32
``baseline``       the reference baseline (Pose2Img's authors' full forward)
``environment``    machine, versions, git state, memory sampler
``report``         the terminal table and the CSV; ``plot``: the PNG
=================  ===========================================================================

Method, per cell: ``warmup`` untimed calls, then timed calls until both ``min_seconds`` and
``min_runs`` are reached (``time.perf_counter``); outliers are clipped and counted
(:data:`~.stats.OUTLIER_RULE`); see docs/bench.md.
"""
from __future__ import annotations

from .baseline import ReferenceBaseline
from .environment import MemorySampler, environment, git_state
from .grid import (PRECISIONS, STAGES, Grid, Layout, backend_status, known_backends, layout, parse_backends,
                   parse_device_slots, parse_ints, parse_names)
from .inputs import BenchInputs, FeedAdapter, load_inputs
from .rows import Skip
from .run import run_bench
from .stats import Method, clip_outliers, frame_agreement, summarise
from .timing import measure, measure_replicated

__all__ = ["BenchInputs", "FeedAdapter", "Grid", "Layout", "MemorySampler", "Method", "PRECISIONS",
           "ReferenceBaseline", "STAGES", "Skip", "backend_status", "clip_outliers", "environment", "frame_agreement",
           "git_state", "known_backends", "layout", "load_inputs", "measure", "measure_replicated", "parse_backends",
           "parse_device_slots", "parse_ints", "parse_names", "run_bench", "summarise"]
