"""poserender's per-user cache folder (``$POSERENDER_CACHE``, default ``~/.cache/poserender``).

It holds checkpoints exported on first use (``exports/``) and the record of model files whose
sha256 was already checked against their manifest (``verified-files.json``), so that checking a
385 MB graph costs one ``stat`` after the first time. Nothing in it is needed for correctness:
a cache that cannot be read or written only makes a start slower.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List

VERIFIED = "verified-files.json"


def cache_root() -> Path:
    return Path(os.environ.get("POSERENDER_CACHE", Path.home() / ".cache" / "poserender"))


def _fingerprint(path: Path) -> List[int]:
    """What says a file is unchanged since it was hashed: size, mtime (ns), inode, device."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


class VerifiedFiles:
    """{absolute path: (fingerprint, sha256)} of files whose hash was computed before."""

    def __init__(self, root: Path = None):
        self.path = (root or cache_root()) / VERIFIED
        try:
            self._entries: Dict[str, list] = json.loads(self.path.read_text())
            if not isinstance(self._entries, dict):
                self._entries = {}
        except (OSError, ValueError):
            self._entries = {}
        self._changed = False

    def sha256(self, path: Path, compute) -> str:
        """The file's sha256: from the record when its fingerprint is unchanged, else ``compute(path)``."""
        key, fingerprint = str(Path(path).resolve()), _fingerprint(path)
        entry = self._entries.get(key)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == fingerprint:
            return entry[1]
        digest = compute(path)
        self._entries[key] = [fingerprint, digest]
        self._changed = True
        return digest

    def save(self) -> None:
        if not self._changed:
            return
        from .fileio import write_json_atomic

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, self._entries)
        except Exception:       # a read-only home: checking again next time is only slower
            pass
