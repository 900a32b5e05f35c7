"""Serve a generated repository from this process with ONNX Runtime (CPU), as a stand-in for
Triton: ``poserender triton-client --local REPO`` and the tests use it.

It does what the server does with the files of the repository and nothing more: a request to
a model is checked against that model's ``config.pbtxt`` (dtypes; shapes, with the batch axis
of a batching model limited to ``max_batch_size``), a stage model runs its ``1/model.onnx`` (a
Python-backend model: the graph its ``model.py`` runs),
and an ensemble runs its steps in data-flow order, each step's ``input_map``/``output_map``
connecting the tensors. It does not batch requests together, and it cannot run TensorRT plans.
"""
from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Dict, Sequence, Union

import numpy as np

from ..errors import UserError
from ..manifest import read_manifest
from .client import Request, contracts
from .contract import ENSEMBLE_PLATFORM, ONNX_PLATFORM, PYTHON_BACKEND
from .validate import load_config, model_kind


class LocalTriton:
    """The transport protocol of :mod:`.client` over a repository folder."""

    def __init__(self, repo: Union[str, Path], threads: int = 0):
        self.repo = Path(repo)
        if not self.repo.is_dir():
            raise UserError("not a folder; expected a repository written by `poserender triton`", self.repo)
        self.configs = {p.name: load_config(p / "config.pbtxt") for p in sorted(self.repo.iterdir())
                        if p.is_dir() and not p.name.startswith(".")}
        self.threads = threads
        self.calls: Counter = Counter()          # model name -> executions (ensemble steps included)
        self._sessions: Dict[str, object] = {}
        self._lock = threading.Lock()

    def get_model_config(self, model: str):
        if model not in self.configs:
            raise UserError(f"no model {model!r} in the repository (models: {', '.join(self.configs)})", self.repo)
        return self.configs[model]

    def infer(self, model: str, inputs: Request, outputs: Sequence[str]) -> Dict[str, np.ndarray]:
        tensors = self._execute(model, dict(inputs))
        missing = [n for n in outputs if n not in tensors]
        if missing:
            raise UserError(f"model {model!r} has no outputs {missing}")
        return {n: tensors[n] for n in outputs}

    def _check(self, model: str, feed: Dict[str, np.ndarray]) -> None:
        config = self.configs[model]
        ins, _ = contracts(config)
        names = [c.name for c in ins]
        if sorted(feed) != sorted(names):
            raise UserError(f"request to {model!r} has inputs {sorted(feed)}; the config expects {names}")
        for contract in ins:
            try:
                contract.check(feed[contract.name], model)
            except ValueError as exc:
                raise UserError(str(exc)) from None

    def _execute(self, model: str, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self._check(model, feed)
        config = self.configs[model]
        with self._lock:
            self.calls[model] += 1
        if config.platform == ENSEMBLE_PLATFORM:
            tensors = dict(feed)
            pending = list(config.ensemble_scheduling.step)
            while pending:
                ready = [s for s in pending if all(v in tensors for v in s.input_map.values())]
                if not ready:
                    raise UserError(f"ensemble {model!r}: steps {[s.model_name for s in pending]} cannot run")
                for step in ready:
                    out = self._execute(step.model_name, {k: tensors[v] for k, v in step.input_map.items()})
                    tensors.update({v: out[k] for k, v in step.output_map.items()})
                    pending.remove(step)
            return tensors
        if model_kind(config) not in (ONNX_PLATFORM, PYTHON_BACKEND):
            raise UserError(f"model {model!r} is a {config.platform} model; running a repository locally needs "
                            "ONNX models (generate it with --backend onnxruntime or python)")
        session = self._session(model, config)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed)))

    def _session(self, model: str, config):
        with self._lock:
            if model not in self._sessions:
                import onnxruntime as ort

                options = ort.SessionOptions()
                if self.threads:
                    options.intra_op_num_threads = self.threads
                version = self.repo / model / "1"
                if model_kind(config) == PYTHON_BACKEND:       # the graph its model.py runs
                    path = version / read_manifest(version)["stages"][0]["file"]
                else:
                    path = version / (config.default_model_filename or "model.onnx")
                self._sessions[model] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            return self._sessions[model]
