"""The measured half of ``--backend auto``: the record ``poserender tune`` keeps beside a model.

``poserender tune MODEL`` (bench/tune.py) times every (backend, precision) usable here on the
model's per-frame stages with real held-out frames and checks each one's frames against ONNX
Runtime FP32 through the quality gate; the record goes into ``MODEL/probe.json`` (beside
manifest.json), one entry per host (:func:`host_key`: CPU model and flags, core count, GPUs,
library versions), so a model folder copied to another machine is measured again there instead
of trusting another machine's numbers. :func:`measured_pick` reads it for the registry's auto
rule (engines/registry.py, :func:`~poserender.engines.registry.pick_auto`). Nothing here imports a
runtime.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..errors import UserError
from .machine import Facts, cpu_model

PROBE_FILE = "probe.json"
SCHEMA = "poserender-probe/1"
#: distributions whose versions change what a backend runs (their versions key the record)
VERSIONED = ("onnxruntime", "onnxruntime-gpu", "openvino", "torch", "tensorrt")


def host_info(facts: Optional[Facts] = None) -> Dict[str, Any]:
    """What a measurement is only valid for: CPU model, its AVX/AMX flags, cores, GPUs, versions."""
    from importlib import metadata

    facts = facts or Facts()
    versions = {}
    for dist in VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    flags = sorted(f for f in facts.cpu_flags if f.startswith(("avx", "amx")))
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": flags,
            "gpus": [g["name"] for g in facts.driver.get("gpus", [])], "versions": versions}


def host_key(info: Optional[Dict[str, Any]] = None) -> str:
    return hashlib.sha256(json.dumps(info or host_info(), sort_keys=True).encode()).hexdigest()[:16]


def read_record(model_dir: Path, key: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """This host's entry of ``MODEL/probe.json`` (another ``key``'s when given); None when absent
    or unreadable (a damaged record only means measuring again)."""
    path = Path(model_dir) / PROBE_FILE
    if not path.is_file():
        return None
    try:
        hosts = json.loads(path.read_text()).get("hosts", {})
    except (OSError, ValueError, AttributeError):
        return None
    entry = hosts.get(key or host_key()) if isinstance(hosts, dict) else None
    return entry if isinstance(entry, dict) and isinstance(entry.get("candidates"), list) else None


def write_record(model_dir: Path, record: Dict[str, Any]) -> Path:
    """Put ``record`` (with its ``host``) into ``MODEL/probe.json`` under its host's key."""
    from ..fileio import write_json_atomic

    path = Path(model_dir) / PROBE_FILE
    try:
        existing = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        existing = {}
    hosts = existing.get("hosts", {}) if isinstance(existing, dict) else {}
    hosts[host_key(record["host"])] = record
    try:
        write_json_atomic(path, {"schema": SCHEMA, "hosts": hosts}, what="the probe record")
    except (OSError, UserError) as exc:
        raise UserError(f"cannot record the probe beside the model ({getattr(exc, 'strerror', None) or exc}); copy "
                        "the model to a writable folder", model_dir) from None
    return path


def passing(record: Dict[str, Any], precision: Optional[str] = None) -> List[Dict[str, Any]]:
    """The candidates of a record that ran and passed the gate (at ``precision`` when given),
    fastest first."""
    ok = [c for c in record["candidates"] if c.get("status") == "ok" and (c.get("gate") or {}).get("passed")
          and (precision is None or c.get("precision") == precision)]
    return sorted(ok, key=lambda c: c["ms_per_frame"])


def measured_pick(model_dir: Path, precision: Optional[str], usable: Callable[[str, str], bool]
                  ) -> Tuple[Optional[Tuple[str, str, str]], str]:
    """((backend, precision, why) or None, why not): the fastest candidate of this host's record
    that passed the gate and that ``usable(backend, precision)`` says can still run here."""
    record = read_record(model_dir)
    if record is None:
        return None, f"no measurement for this host in {PROBE_FILE} (`poserender tune {model_dir}` measures one)"
    for best in passing(record, precision):
        if not usable(best["backend"], best["precision"]):
            continue
        psnr = best["quality"].get("psnr_db")
        why = (f"auto: {best['backend']} {best['precision']}: fastest that passed the gate on this host "
               f"({best['ms_per_frame']:.1f} ms/frame at batch {record.get('batch')}, PSNR "
               f"{'inf' if psnr is None else psnr} dB vs {record.get('reference', 'ort-cpu fp32')}; {PROBE_FILE}, "
               f"{record.get('measured')})")
        return (best["backend"], best["precision"], why), ""
    at = f" at {precision}" if precision else ""
    return None, f"no candidate{at} in this host's {PROBE_FILE} passed the gate and runs here"
