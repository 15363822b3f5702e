"""Reads back an offline W&B run (`run-*.wandb`): LevelDB-log framing (32 KiB blocks, 7-byte record
headers: crc32c, length, type) around protobuf `Record`s. wandb >= 0.2x no longer ships a Python
reader for its own log, so the tests carry this small one."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

_BLOCK = 32768
_HEADER = 7
_FULL, _LAST = 1, 4


def records(path: Path) -> Iterator[Any]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run log")
    pos, chunk = 7, b""
    while pos + _HEADER <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < _HEADER:  # block trailer padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if length == 0 and kind == 0:
            pos += room
            continue
        chunk += data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(path: Path) -> dict[str, Any]:
    """{'history': [rows], 'summary': {...}, 'config': {...}} of an offline run log."""
    history, summary, config = [], {}, {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind in ("config", "run"):  # the run record carries the initial config
            updates = record.config.update if kind == "config" else record.run.config.update
            config.update({_key(i): json.loads(i.value_json) for i in updates})
    return {"history": history, "summary": summary, "config": config}
