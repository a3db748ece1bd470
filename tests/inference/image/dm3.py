"""A minimal DigitalMicrograph 3 writer, for tests only (rosettasciio reads DM but cannot write it).

Written from the DM3 layout that rosettasciio's reader parses: a big-endian header
(version 3, size, byte order flag), then nested tag groups. A tag is a group (id 20)
or data (id 21: ``%%%%``, the length of an info array, the info array, the payload
in the file's byte order). Floats are stored as doubles (type 7), whole numbers as
longs (type 3), text as an array of uint16 (type 4), the image as an array of
float32 (type 6) with ``DataType`` 2.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

_BIG = ">"
_LITTLE = "<"


def _name(name: str) -> bytes:
    raw = name.encode("latin-1")
    return struct.pack(">h", len(raw)) + raw


def _data(value: Any) -> bytes:
    out = b"%%%%"
    if isinstance(value, np.ndarray):
        flat = np.ascontiguousarray(value, dtype="<f4").ravel()
        out += struct.pack(">4l", 3, 20, 6, flat.size) + flat.tobytes()
    elif isinstance(value, str):
        chars = np.frombuffer(value.encode("utf-16-le"), dtype="<u2")
        out += struct.pack(">4l", 3, 20, 4, chars.size) + chars.tobytes()
    elif isinstance(value, bool | int):
        out += struct.pack(">2l", 1, 3) + struct.pack("<l", int(value))
    else:
        out += struct.pack(">2l", 1, 7) + struct.pack("<d", float(value))
    return out


def _group(tags: dict[str, Any] | list[Any]) -> bytes:
    items = tags.items() if isinstance(tags, dict) else (("", v) for v in tags)
    items = list(items)
    out = struct.pack(">bbl", 0, 0, len(items))
    for name, value in items:
        if isinstance(value, dict | list):
            out += b"\x14" + _name(name) + _group(value)
        else:
            out += b"\x15" + _name(name) + _data(value)
    return out


def write_dm3(
    path: Path,
    image: np.ndarray,
    *,
    scale: float,
    units: str,
    image_tags: dict[str, Any] | None = None,
) -> Path:
    """Write a 2-D `image` with pixel size `scale` in `units` and `image_tags` to `path`."""
    ny, nx = image.shape
    dimension = {"Origin": 0.0, "Scale": float(scale), "Units": units}
    root = {
        "ImageList": [
            {
                "ImageData": {
                    "Calibrations": {
                        "Brightness": {"Origin": 0.0, "Scale": 1.0, "Units": "counts"},
                        "Dimension": [dict(dimension), dict(dimension)],
                    },
                    "Data": image,
                    "DataType": 2,
                    "Dimensions": [nx, ny],
                    "PixelDepth": 4,
                },
                "ImageTags": image_tags or {},
                "Name": "HAADF",
            }
        ]
    }
    body = _group(root)
    header = struct.pack(">3l", 3, len(body) + 8, 1)
    path.write_bytes(header + body + b"\x00" * 8)
    return path
