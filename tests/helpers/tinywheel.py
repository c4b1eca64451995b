"""A tiny pure-Python wheel, written by hand, for tests that install packages offline.

pip installs a local wheel file without asking any index, so a test environment with
``pip: [/path/to/hpcjobs_probe-1.0-py3-none-any.whl]`` builds with no network.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path, *, name: str = "hpcjobs_probe", version: str = "1.0", message: str = "probe ok") -> Path:
    """Write ``<name>-<version>-py3-none-any.whl`` into *folder*; its module has ``MESSAGE``."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"MESSAGE = {message!r}\nVERSION = {version!r}\n".encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test probe\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hpcjobs-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist}/top_level.txt": f"{name}\n".encode(),
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items()) + f"{dist}/RECORD,,\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist}/RECORD", record)
    return wheel
