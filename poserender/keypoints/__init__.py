"""Keypoint formats and layouts (numpy only): read files into 122-joint sequences in
source-image pixels, and move them onto the network canvas."""
from .layout import (BODY, CLUSTERS, EYES, FACE, LEFT_HAND, LIMBS, N_JOINTS, N_NPZ_JOINTS, N_OPENPOSE,
                     NECK, NPZ_TO_122, OPENPOSE_TO_122, RIGHT_HAND)
from .readers import (ACCEPTED_FORMATS, KeypointSequence, canvas_transform, openpose137_to_122,
                      read_keypoints, read_npy, read_npz, read_openpose_json, validate_frame)

__all__ = [
    "BODY", "CLUSTERS", "EYES", "FACE", "LEFT_HAND", "LIMBS", "N_JOINTS", "N_NPZ_JOINTS", "N_OPENPOSE",
    "NECK", "NPZ_TO_122", "OPENPOSE_TO_122", "RIGHT_HAND",
    "ACCEPTED_FORMATS", "KeypointSequence", "canvas_transform", "openpose137_to_122", "read_keypoints",
    "read_npy", "read_npz", "read_openpose_json", "validate_frame",
]
