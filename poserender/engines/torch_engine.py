"""PyTorch engine: runs a stage's nn.Module (the reference for every other backend), on the CPU
or on a CUDA device.

On CUDA it can run the convolutional trunk in FP16/BF16 (:func:`reduced_precision_trunks`:
the largest submodules made only of conv/norm/activation/upsample layers are cast, with their
inputs cast on the way in and back to FP32 on the way out, so keypoint geometry, warps and
the uint8 conversion stay FP32, as in the TensorRT build), use channels-last memory, replay
a CUDA graph captured once per batch size, and optionally ``torch.compile`` the module.
It runs the same modules that were exported, so it is also the GPU reference.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from ..specs import StageSpec
from .base import Engine

PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: layer types that make up a convolutional trunk (safe to run in reduced precision)
TRUNK_LAYERS = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "BatchNorm2d", "ReLU", "LeakyReLU", "PReLU",
                "ELU", "SiLU", "GELU", "Tanh", "Sigmoid", "Upsample", "Identity", "Dropout",
                "ZeroPad2d", "ReflectionPad2d", "ReplicationPad2d", "MaxPool2d", "AvgPool2d")


def is_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _is_trunk(module) -> bool:
    leaves = [m for m in module.modules() if not list(m.children())]
    return (any(type(m).__name__.startswith("Conv") for m in leaves)
            and all(type(m).__name__ in TRUNK_LAYERS for m in leaves))


def reduced_precision_trunks(module, run: Optional[Callable[[], object]] = None) -> List[str]:
    """Names of the outermost pure convolutional trunks (e.g. the three U-Nets).

    A trunk only helps if its own ``forward`` is called (a parent may call a trunk's children
    or helper methods instead), so with ``run`` (one forward pass of ``module``) only the
    trunks that were actually called count.
    """
    candidates = {name: m for name, m in module.named_modules() if name and _is_trunk(m)}
    if run is not None:
        called = set()
        handles = [m.register_forward_hook(lambda mod, *_: called.add(id(mod))) for m in candidates.values()]
        try:
            run()
        finally:
            for handle in handles:
                handle.remove()
        candidates = {name: m for name, m in candidates.items() if id(m) in called}
    return [name for name in candidates
            if not any(name.startswith(other + ".") for other in candidates if other != name)]


def cast_trunks(module, dtype, run: Optional[Callable[[], object]] = None) -> List[str]:
    """Cast each trunk to ``dtype``; hooks cast float inputs in and the output back to float32."""
    import torch

    def cast_in(_, args):
        return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    def cast_out(_, __, output):
        return output.float() if torch.is_tensor(output) else output

    names = reduced_precision_trunks(module, run)
    for name in names:
        trunk = module.get_submodule(name)
        trunk.to(dtype)
        trunk.register_forward_pre_hook(cast_in)
        trunk.register_forward_hook(cast_out)
    return names


class TorchEngine(Engine):
    """``module_loader`` is a cheap callable returning the stage module; it runs at activate()."""

    backend = "torch"

    def __init__(self, spec: StageSpec, module_loader: Callable[[], "object"], device: str = "cpu",
                 precision: str = "fp32", channels_last: bool = False, cuda_graphs: bool = False,
                 compile: bool = False):
        super().__init__(spec)
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.module_loader = module_loader
        self.device = device
        self.precision, self.channels_last, self.compile = precision, channels_last, compile
        self.cuda_graphs = cuda_graphs and str(device).startswith("cuda")
        self.backend = "torch-cuda" if str(device).startswith("cuda") else "torch"
        self.module = None
        self.trunks: List[str] = []
        self._graphs: Dict[int, tuple] = {}

    def _activate_impl(self) -> None:
        import torch

        module = self.module_loader().to(self.device).eval()
        if self.precision != "fp32":
            sample = self.spec.sample_inputs(self.spec.min_batch)
            probe = [torch.from_numpy(sample[n]).to(self.device) for n in self.spec.input_names]
            with torch.no_grad():
                self.trunks = cast_trunks(module, getattr(torch, PRECISIONS[self.precision]),
                                          run=lambda: module(*probe))
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = torch.compile(module) if self.compile else module

    def _run(self, tensors):
        import torch

        with torch.no_grad():
            out = self.module(*tensors)
        return out if isinstance(out, (tuple, list)) else (out,)

    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        import torch

        tensors = [torch.from_numpy(feed[n]).to(self.device, non_blocking=True) for n in self.spec.input_names]
        out = self._replay(tensors) if self.cuda_graphs else self._run(tensors)
        return {n: t.cpu().numpy() for n, t in zip(self.spec.output_names, out)}

    def _replay(self, tensors):
        """CUDA-graph replay: one graph per batch size, captured on first use with static
        input/output tensors; later calls copy into the static inputs and replay."""
        import torch

        key = tuple(tuple(t.shape) for t in tensors)
        if key not in self._graphs:
            static_in = [t.clone() for t in tensors]
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):                     # warm-up (cuDNN autotune, lazy init) off the graph
                    self._run(static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._run(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        for dst, src in zip(static_in, tensors):
            dst.copy_(src)
        graph.replay()
        return [t.clone() for t in static_out]

    def _deactivate_impl(self) -> None:
        self._graphs.clear()
        self.module = None
