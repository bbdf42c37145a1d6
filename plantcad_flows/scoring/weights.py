"""A local model directory's weight files, checked before a run without loading them.

A directory whose weights are missing or cut short (a copy that stopped, a disk that filled)
otherwise fails each cell after a minute or two of loading, with a traceback that does not name
the file. What can be known from the files' own bookkeeping is checked here, reading only their
headers and directories:
* the files transformers would load are there: `model.safetensors` (or its index and every shard
  the index names), else `pytorch_model.bin` (or its index and shards);
* a safetensors file's header parses and every tensor's byte range lies within the file;
* a `.bin` file opens as the zip archive `torch.save` writes, and every member lies within it.
A file that passes can still hold wrong numbers; one that fails cannot be loaded.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile

from plantcad_flows.errors import ValidationError

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def weight_files(directory: str) -> list[str]:
    """The weight files transformers would load from `directory`, safetensors first; [] if none.

    Raises:
        ValueError: an index file that does not parse, or names a shard that is not there.
    """
    for single in (SAFETENSORS, PYTORCH_BIN):
        index = os.path.join(directory, f"{single}.index.json")
        if os.path.isfile(index):
            try:
                with open(index) as f:
                    shards = sorted(set(json.load(f)["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{index}: not a weight index ({type(e).__name__}: {e})") from None
            paths = [os.path.join(directory, s) for s in shards]
            missing = [p for p in paths if not os.path.isfile(p)]
            if missing:
                raise ValueError(f"{missing[0]}: missing (named by {index})")
            return paths
        path = os.path.join(directory, single)
        if os.path.isfile(path):
            return [path]
    return []


def safetensors_problem(path: str) -> str | None:
    """Why `path` is not a whole safetensors file, or None."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return f"truncated: {size} bytes, shorter than a safetensors header"
        (length,) = struct.unpack("<Q", raw)
        if length > min(_MAX_HEADER, size - 8):
            return f"truncated or not safetensors: its header claims {length} bytes, the file holds {size}"
        try:
            header = json.loads(f.read(length))
        except ValueError:
            return "not safetensors: its header is not JSON"
    if not isinstance(header, dict):
        return "not safetensors: its header is not a JSON object"
    try:
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        return "not safetensors: a tensor without data_offsets"
    needed = 8 + length + end
    if needed > size:
        return f"truncated: its tensors need {needed} bytes, the file holds {size}"
    return None


def bin_problem(path: str) -> str | None:
    """Why `path` is not a whole `torch.save` archive, or None."""
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                # a member's local header (30 bytes + its name) and its data lie within the file
                if info.header_offset + 30 + len(info.filename) + info.compress_size > size:
                    return f"truncated: member {info.filename} runs past the end ({size} bytes)"
    except zipfile.BadZipFile:
        return f"truncated or not a PyTorch checkpoint: does not open as a zip archive ({size} bytes)"
    return None


def check_weights(label: str, path: str, directory: str) -> None:
    """Raise naming `models[LABEL].path` and the file when `directory`'s weights cannot load.

    Raises:
        ValidationError: no weight files, a missing shard, or a file that is cut short.
    """
    field = f"models[{label}].path"
    try:
        files = weight_files(directory)
    except ValueError as e:
        raise ValidationError(field, path, str(e)) from None
    if not files:
        where = os.path.abspath(directory)
        raise ValidationError(field, path, f"no weights in {where} (no {SAFETENSORS} or {PYTORCH_BIN})")
    for file in files:
        problem = safetensors_problem(file) if file.endswith(".safetensors") else bin_problem(file)
        if problem:
            raise ValidationError(field, path, f"{os.path.abspath(file)} is {problem}")
