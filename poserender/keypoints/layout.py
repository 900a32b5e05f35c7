"""Joint layouts used by Pose2Img: OpenPose 137 points, the 122-point model layout, the 121-point
Speech Drives Templates ``.npz`` layout, and the 13 heat-map clusters / 8 limbs over 122 points.

All index constants are tuples (immutable, hashable); use ``np.asarray(...)`` to index arrays.
"""
from __future__ import annotations

from typing import Tuple

#: OpenPose with ``--face --hand``: BODY_25 (0-24), face (25-94), left hand (95-115), right hand (116-136)
N_BODY25 = 25
N_FACE = 70
N_HAND = 21
N_OPENPOSE = N_BODY25 + N_FACE + 2 * N_HAND  # 137

#: the reference's model layout (``pose137_to_pose122``)
N_JOINTS = 122

#: the root joint of the 122 layout; the ``.npz`` poses are relative to it and leave it out
NECK = 1

#: OpenPose column for each of the 122 joints: BODY_25 0-7, eyes 15-16, face, left hand, right hand
OPENPOSE_TO_122: Tuple[int, ...] = tuple(range(0, 8)) + (15, 16) + tuple(range(25, N_OPENPOSE))

#: 122-layout index of each of the 121 joints in a Speech Drives Templates ``poses_pred_batch``
NPZ_TO_122: Tuple[int, ...] = tuple(j for j in range(N_JOINTS) if j != NECK)
N_NPZ_JOINTS = len(NPZ_TO_122)  # 121

#: parts of the 122 layout
BODY = tuple(range(0, 8))          # nose, neck, r shoulder, r elbow, r wrist, l shoulder, l elbow, l wrist
EYES = (8, 9)                      # BODY_25 right eye, left eye
FACE = tuple(range(10, 80))        # OpenPose face points 0-69
LEFT_HAND = tuple(range(80, 101))  # OpenPose left hand points 0-20
RIGHT_HAND = tuple(range(101, 122))

#: the 13 joint clusters of the heat maps (reference util.py:241), in channel order. The nose (0)
#: and face points 17, 26, 36, 47 (122-index 27, 36, 46, 57) belong to no cluster.
CLUSTERS: Tuple[Tuple[int, ...], ...] = (
    (1,), (2,), (3,), (4,), (5,), (6,), (7,),
    tuple(range(10, 27)),                                           # jaw line
    (8, 9, 78, 79) + tuple(range(28, 36)) + tuple(range(47, 57)),   # eyes, pupils, brows, eye contours
    tuple(range(37, 46)),                                           # nose
    tuple(range(58, 78)),                                           # mouth
    RIGHT_HAND,
    LEFT_HAND,
)

#: the 8 limbs of the limb masks and limb transforms, in channel order (mask channel k+1 = limb k).
#: Limb geometry uses the first two joints of each entry (head: nose -> right eye; torso: neck ->
#: right shoulder; hands: point 0 -> point 1), the centre is the mean of all of them.
LIMBS: Tuple[Tuple[int, ...], ...] = (
    (0, 8, 9),   # head
    (1, 2, 5),   # torso
    (2, 3),      # right upper arm
    (3, 4),      # right forearm
    (5, 6),      # left upper arm
    (6, 7),      # left forearm
    RIGHT_HAND,
    LEFT_HAND,
)
