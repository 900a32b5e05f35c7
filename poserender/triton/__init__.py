"""Triton Inference Server model repositories from an exported model folder, and a real server.

* :mod:`.contract` holds what the modules below agree on (names, platforms, dtypes, chains).
* :mod:`.repository` writes the repository (``poserender triton DIR -o REPO``): one model per
  stage (ONNX Runtime, TensorRT or Python backend), an ensemble wiring the stages,
  ``config.pbtxt`` files (:mod:`.pbtxt`) derived from the StageSpecs.
* :mod:`.python_backend` is the Python-backend stage model: the files written for it and the
  code its ``model.py`` runs inside the server (poserender's own engine).
* :mod:`.validate` checks a repository without a server: every ``config.pbtxt`` against
  Triton's own protobuf schema (``tritonclient``'s ``model_config_pb2``), each model's inputs
  and outputs against its ONNX graph and StageSpec, and the ensemble's wiring with the rules
  the Triton server applies when it loads an ensemble.
* :mod:`.server` starts, waits for and stops a real ``tritonserver`` (``poserender
  triton-serve``), from the ``nvidia-pytriton`` wheel or PATH.
* :mod:`.client` streams a keypoint file through the ensemble over gRPC
  (``poserender triton-client``); :mod:`.local` runs a repository's ensemble with ONNX Runtime
  on this machine, as a stand-in for a server in tests and ``triton-client --local``.

Layer rule: this package may import export, engines, runtime and specs; nothing imports it.
``tritonclient`` is imported inside functions only.
"""
