"""Protobuf text format (``config.pbtxt``) from nested dicts, as Triton reads it."""
from __future__ import annotations

from typing import Any, Mapping


class Enum(str):
    """An enum value in protobuf text format (written bare: ``TYPE_FP32``, ``KIND_GPU``)."""


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    out = []
    for byte in str(value).encode("utf-8"):
        char = chr(byte)
        out.append("\\" + char if char in '"\\' else char if 32 <= byte < 127 else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def to_pbtxt(message: Mapping[str, Any], indent: int = 0) -> str:
    """A nested dict as protobuf text format. Lists of dicts are repeated messages (map fields
    too: ``[{"key": k, "value": v}]``); lists of scalars are written ``[ a, b ]``."""
    pad, lines = "  " * indent, []
    for key, value in message.items():
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key} {{")
            lines.append(to_pbtxt(value, indent + 1))
            lines.append(f"{pad}}}")
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], Mapping):
            lines.append(f"{pad}{key} [")
            for i, item in enumerate(value):
                lines.append(f"{pad}  {{")
                lines.append(to_pbtxt(item, indent + 2))
                lines.append(f"{pad}  }}" + ("," if i < len(value) - 1 else ""))
            lines.append(f"{pad}]")
        elif isinstance(value, (list, tuple)):
            lines.append(f"{pad}{key}: [ " + ", ".join(_scalar(v) for v in value) + " ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "\n".join(line for line in lines if line)
