"""StageSpec: one declaration of a stage's tensor contract, read by export, engines and checks.

A model is a list of stages; each stage is one ONNX graph / one engine. Dimensions are ints
or the string ``"batch"`` (dynamic, bounded by ``min/opt/max_batch``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Tuple, Union

import numpy as np

Dim = Union[int, str]

_DTYPES = {"float32": np.float32, "uint8": np.uint8, "int64": np.int64, "float16": np.float16}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: Tuple[Dim, ...]
    doc: str = ""

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(_DTYPES[self.dtype])

    def concrete_shape(self, batch: int) -> Tuple[int, ...]:
        return tuple(batch if d == "batch" else int(d) for d in self.shape)

    def check(self, array: np.ndarray, stage: str) -> None:
        """Raise ValueError naming the tensor when dtype or shape disagree with the spec."""
        if array.dtype != self.np_dtype:
            raise ValueError(f"{stage}.{self.name}: dtype {array.dtype}, expected {self.dtype}")
        if len(array.shape) != len(self.shape) or any(
                d != "batch" and int(d) != n for d, n in zip(self.shape, array.shape)):
            raise ValueError(f"{stage}.{self.name}: shape {tuple(array.shape)}, expected {self.shape}")

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "doc": self.doc}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TensorSpec":
        return cls(d["name"], d["dtype"], tuple(d["shape"]), d.get("doc", ""))


@dataclasses.dataclass(frozen=True)
class StageSpec:
    name: str
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    min_batch: int = 1
    opt_batch: int = 4
    max_batch: int = 16
    file: str = ""
    doc: str = ""

    @property
    def input_names(self) -> List[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> List[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> Dict[str, Dict[int, str]]:
        return {t.name: {i: "batch" for i, d in enumerate(t.shape) if d == "batch"}
                for t in self.inputs + self.outputs}

    def sample_inputs(self, batch: int = 1, seed: int = 0) -> Dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {t.name: rng.standard_normal(t.concrete_shape(batch)).astype(t.np_dtype)
                for t in self.inputs}

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "file": self.file, "doc": self.doc,
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs],
                "batch": {"min": self.min_batch, "opt": self.opt_batch, "max": self.max_batch}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StageSpec":
        b = d.get("batch", {})
        return cls(d["name"], tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
                   tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
                   b.get("min", 1), b.get("opt", 4), b.get("max", 16), d.get("file", ""), d.get("doc", ""))
