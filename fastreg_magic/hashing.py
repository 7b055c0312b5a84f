"""A file's hash, read in chunks: ``hashlib.file_digest`` does this from Python 3.11 on, and the
package supports 3.10."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_digest(path: Path, algorithm: str):
    """The ``hashlib`` object of ``algorithm`` over the file's bytes (``.digest()``, ``.hexdigest()``)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest
