"""Triton Inference Server model repositories from an exported model folder.

* :mod:`.repository` writes the repository (``poserender triton DIR -o REPO``): one model per
  stage (ONNX Runtime or TensorRT backend), an ensemble wiring the stages, ``config.pbtxt``
  files derived from the StageSpecs.
* :mod:`.validate` checks a repository without a server: every ``config.pbtxt`` against
  Triton's own protobuf schema (``tritonclient``'s ``model_config_pb2``), each model's inputs
  and outputs against its ONNX graph and StageSpec, and the ensemble's wiring with the rules
  the Triton server applies when it loads an ensemble.
* :mod:`.client` streams a keypoint file through the ensemble over gRPC
  (``poserender triton-client``); :mod:`.local` runs a repository's ensemble with ONNX Runtime
  on this machine, as a stand-in for a server in tests and ``triton-client --local``.

Layer rule: this package may import export, engines, runtime and specs; nothing imports it.
``tritonclient`` is imported inside functions only.
"""
