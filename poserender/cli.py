"""The ``poserender`` command line: a click group whose commands live in ``poserender.commands``.

Commands are imported only when they run (or when --help lists them), so ``poserender --help`` and
``poserender doctor`` never import torch. Every UserError becomes one line on stderr and exit code 2,
without a traceback (see ``commands.common.user_errors``).
"""
from __future__ import annotations

import importlib

import click

from . import __version__, signals

# name -> "module:attribute" of a click command. One line per command; keep it sorted by name.
COMMANDS = {
    "bench": "poserender.commands.bench:bench",
    "build": "poserender.commands.build:build",
    "cache": "poserender.commands.cache:cache",
    "demo": "poserender.commands.demo:demo",
    "demo-data": "poserender.commands.demo_data:demo_data",
    "doctor": "poserender.commands.doctor:doctor",
    "export": "poserender.commands.export:export_cmd",
    "render": "poserender.commands.render:render",
    "train": "poserender.commands.train:train",
    "triton": "poserender.commands.triton:triton",
    "triton-client": "poserender.commands.triton:triton_client",
    "triton-serve": "poserender.commands.triton:triton_serve",
    "tune": "poserender.commands.tune:tune",
    "verify": "poserender.commands.verify:verify",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module on first use."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx, name):
        if name in COMMANDS:
            module, attr = COMMANDS[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="poserender")
def main() -> None:
    """Pose-guided human image synthesis: export checkpoints, render keypoint streams.

    \b
    poserender doctor
    poserender export ckpt_final.pth --config Oliver.yaml --scale 2.5 -o art/oliver
    poserender render art/oliver --source img.jpg --source-keypoints kp.npy \\
        --keypoints poses.npz --audio speech.mp4 -o out.mp4
    """


def run() -> None:
    """The ``poserender`` executable: SIGTERM and SIGHUP clean up like Ctrl-C (poserender.signals),
    then the command line. (In-process callers, e.g. tests, use ``main`` and keep their handlers.)"""
    signals.install()
    main()


if __name__ == "__main__":  # pragma: no cover
    run()
