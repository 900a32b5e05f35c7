"""`poserender doctor`: what is usable on this machine."""
from __future__ import annotations

import click

from .common import user_errors


@click.command()
@user_errors
def doctor() -> None:
    """Show which backends and devices are usable here, and library versions."""
    from ..doctor import collect, format_report
    click.echo(format_report(collect()))
