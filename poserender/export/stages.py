"""Split a Pose2Img generator into its exportable stages, each paired with its StageSpec."""
from __future__ import annotations

from typing import List, Tuple

from torch import nn

from ..models.pose2img import FrameStage, Pose2ImgGenerator, Pose2ImgGeometry, SourceStage
from ..specs import StageSpec, pose2img_stage_specs


def pose2img_stages(generator: Pose2ImgGenerator, geometry: Pose2ImgGeometry) -> List[Tuple[StageSpec, nn.Module]]:
    """``[(source_spec, SourceStage), (frame_spec, FrameStage)]`` sharing one generator, eval mode."""
    source_spec, frame_spec = pose2img_stage_specs(geometry.height, geometry.width)
    generator.eval()
    return [(source_spec, SourceStage(generator, geometry).eval()),
            (frame_spec, FrameStage(generator, geometry).eval())]
