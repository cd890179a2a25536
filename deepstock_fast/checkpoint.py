"""Files a run writes and reads back: written atomically, read as plain data only.

A policy file and a checkpoint are dicts of tensors and plain data. :func:`atomic_save` never
leaves half a file; :func:`load_file` loads with ``torch.load(weights_only=True)``, so a crafted
file cannot run code, and names the file in every error.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import re
import tempfile

import torch


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same directory, then rename: a reader (or a crash)
    never sees half a file."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


#: What :func:`atomic_save`'s temporaries are named: ``<name><random>.tmp`` next to the file.
TEMPORARY_SUFFIX = ".tmp"


def load_file(path: str | os.PathLike, map_location="cpu", what: str = "file") -> dict:
    """A dict written by :func:`atomic_save` (a policy or a checkpoint), read with
    ``torch.load(weights_only=True)``: only tensors and plain data are accepted, so a crafted
    file cannot run code. Any unreadable file raises a ``ValueError`` naming it and saying why."""
    path = pathlib.Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except OSError as e:
        raise ValueError(f"cannot read the {what} file {path}: {e.strerror or e}") from None
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # an object to build: code would run
            raise ValueError(f"refused to load the {what} file {path}: it holds Python objects "
                             "other than tensors and plain data (not written by deepstock_fast, "
                             "or tampered with); nothing in it was run") from None
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))  # not torch's advice
        raise ValueError(f"the {what} file {path} is corrupted or not a file deepstock_fast "
                         f"writes ({detail.group(1) if detail else _first_line(e)})") from None
    except Exception as e:  # noqa: BLE001  (any parse failure of a damaged file)
        raise ValueError(f"the {what} file {path} is truncated or corrupted "
                         f"({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(payload, dict):
        raise ValueError(f"the {what} file {path} holds a {type(payload).__name__}, not the "
                         "mapping deepstock_fast writes")
    return payload


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else "no details"
