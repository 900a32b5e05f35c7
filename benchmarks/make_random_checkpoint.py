"""Write a full-size Pose2Img checkpoint with seeded random weights, to bench without the authors'.

The weights are ``torch.manual_seed(seed)`` initialisations of the published architecture (U-Net
width 64, 131.7 M parameters); every BatchNorm gets non-identity statistics and affine values
(mean 0.1 N, var 1 + 0.1 |N|, scale 1 + 0.1 N, shift 0.1 N) so frames are not flat. Timing does
not depend on the values. The checkpoint is ours (``{'G': state_dict, 'poserender': meta}``) with
the config embedded, so ``poserender bench CKPT`` needs no --config, and the meta records how it
was made.

    python benchmarks/make_random_checkpoint.py -o benchmarks/work/pose2img_w64_seed0.pth
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

OLIVER_YAML = REPO_ROOT.parent / "shared" / "data" / "oliver" / "Oliver.yaml"
#: Oliver.yaml (POSE2IMAGE section) values, used when the YAML is not beside the repository
OLIVER = dict(img_h=640, img_w=640, w_bias=500.0, h_bias=40.0,
              kp_var_root=(10, 10, 10, 10, 10, 10, 10, 4, 2, 3, 2, 4, 4),
              mask_sigma_perp=(35, 25, 25, 20, 25, 20, 10, 10),
              root_node=(822.07040391, 357.76986784))


def random_generator(width: int, seed: int):
    import torch

    from poserender.models.pose2img import Pose2ImgGenerator

    torch.manual_seed(seed)
    generator = Pose2ImgGenerator(width=width)
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.normal_(0.0, 1.0).abs_().mul_(0.1).add_(1.0)
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
    return generator.eval()


def write_checkpoint(out: Path, width: int = 64, seed: int = 0, scale: float = 2.5, config: Optional[str] = None,
                     warp_mode: str = "legacy", command: str = "") -> Path:
    from poserender.config import Pose2ImgConfig, load_pose2img_config
    from poserender.models.checkpoint import save_checkpoint

    if config or OLIVER_YAML.is_file():
        cfg = load_pose2img_config(config or OLIVER_YAML, scale=scale)
        where = str(config or OLIVER_YAML)
    else:
        cfg = Pose2ImgConfig(scale=scale, **OLIVER)
        where = "built-in Oliver.yaml values"
    cfg.check_canvas("--scale")
    generator = random_generator(width, seed)
    meta = {"config": cfg.to_dict(), "warp_mode": warp_mode,
            "weights": f"random: torch.manual_seed({seed}), BatchNorm statistics/affine randomised",
            "config_from": where, "made_by": command or f"benchmarks/make_random_checkpoint.py --width {width} "
                                                         f"--seed {seed} --scale {scale:g} --warp-mode {warp_mode}"}
    save_checkpoint(out, generator, meta)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", default=str(REPO_ROOT / "benchmarks" / "work" / "pose2img_w64_seed0.pth"))
    p.add_argument("--width", type=int, default=64, help="U-Net width (64: the published size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=2.5, help="canvas = 640 / scale (2.5 -> 256 x 256)")
    p.add_argument("--config", help="Pose2Img YAML (default: ../shared/data/oliver/Oliver.yaml, else built in)")
    p.add_argument("--warp-mode", default="legacy", choices=("legacy", "exact"))
    args = p.parse_args(argv)
    command = shlex.join(["python", "benchmarks/make_random_checkpoint.py", *(argv if argv is not None else sys.argv[1:])])
    out = write_checkpoint(Path(args.output), args.width, args.seed, args.scale, args.config, args.warp_mode, command)
    print(f"wrote {out} ({out.stat().st_size / 2 ** 20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
