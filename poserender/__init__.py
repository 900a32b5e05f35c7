"""poserender: a deployment runtime for pose-guided human image synthesis.

Families: ``pose2img`` (Speech Drives Templates, ICCV 2021) and, later, ``psc`` (TMM 2022).
Importing this package never imports torch, tensorrt, pycuda or a CUDA build of onnxruntime.
"""
__version__ = "0.1.0"
