"""The Engine protocol: one stage, named numpy arrays in, named numpy arrays out.

Like Polygraphy's runners: ``activate()`` builds the heavy object (a session, a module),
``infer(feed)`` checks the feed against the StageSpec and calls ``_infer_impl``,
``deactivate()`` frees it; engines are context managers. Nothing heavy is created in
``__init__``, so choosing a backend costs nothing until it is used.
"""
from __future__ import annotations

import abc
from typing import Dict, Sequence

import numpy as np

from ..specs import StageSpec, TensorSpec


class Engine(abc.ABC):
    #: short backend name shown to users (``ort-cpu``, ``torch``, ...)
    backend: str = "?"

    def __init__(self, spec: StageSpec):
        self.spec = spec
        self.is_active = False

    def input_specs(self) -> Sequence[TensorSpec]:
        return self.spec.inputs

    def activate(self) -> "Engine":
        if not self.is_active:
            self._activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False

    def infer(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{self.backend} engine for stage {self.spec.name!r} is not active")
        missing = [t.name for t in self.spec.inputs if t.name not in feed]
        if missing:
            raise ValueError(f"stage {self.spec.name!r}: missing inputs {missing}")
        for t in self.spec.inputs:
            t.check(feed[t.name], self.spec.name)
        return self._infer_impl({t.name: feed[t.name] for t in self.spec.inputs})

    def __enter__(self) -> "Engine":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @abc.abstractmethod
    def _activate_impl(self) -> None: ...

    @abc.abstractmethod
    def _infer_impl(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]: ...

    def _deactivate_impl(self) -> None:
        pass
