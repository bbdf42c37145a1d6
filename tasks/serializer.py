"""How the pipeline's small task results are persisted: JSON, with stable type names.

Prefect's default pickles results, and its JSON serializer records each pydantic object's class
path; either way, moving a class to another module breaks every cache record written before. So
each result type is registered here under a stable name (`prepared-split`, `shard-output`,
`cell-result`) and stored as `{"$type": name, "data": <model JSON>}`. A record whose type name
is unknown fails to load and the step simply runs again.
"""

from __future__ import annotations

import json
from typing import Any

from prefect.serializers import Serializer
from pydantic import BaseModel, Field

from plantcad_flows.results.table import CellResult
from plantcad_flows.steps import PreparedSplit, ShardOutput

RESULT_TYPES: dict[str, type[BaseModel]] = {
    "prepared-split": PreparedSplit,
    "shard-output": ShardOutput,
    "cell-result": CellResult,
}
_NAMES = {cls: name for name, cls in RESULT_TYPES.items()}


def _encode(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        name = _NAMES.get(type(obj))
        if name is None:
            raise TypeError(f"{type(obj).__name__} has no stable result name in tasks/serializer.py")
        return {"$type": name, "data": obj.model_dump(mode="json")}
    if isinstance(obj, dict):
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"$type", "data"}:
            return RESULT_TYPES[obj["$type"]].model_validate(obj["data"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


class StableJSONSerializer(Serializer):
    """JSON for the pipeline's results, independent of where their classes live."""

    type: str = Field(default="plantcad-json", frozen=True)

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(_encode(obj), sort_keys=True).encode()

    def loads(self, blob: bytes) -> Any:
        return _decode(json.loads(blob))
