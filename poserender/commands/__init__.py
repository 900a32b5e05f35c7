"""The click commands of `poserender`, one module each (registered lazily in poserender.cli)."""
