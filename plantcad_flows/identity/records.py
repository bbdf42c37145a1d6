"""The identities the plan carries: what a model or a split resolved to, typed and frozen.

A `Cell` holds one for its model and one for its data, set at plan time; workers read them and
never resolve anything again. `key` is what enters cache keys, `value` what results rows record.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

IdentityKind = Literal["hub", "git", "local", "remote"]


class Identity(BaseModel):
    """What one model or split is, as resolved at plan time.

    * `hub`: a Hugging Face repo at `revision` (a commit sha). For a checkpoint in a subfolder,
      `fingerprint` also holds its files' blob ids, so that a commit touching another subfolder
      does not re-score this one.
    * `git`: a local git clone of a dataset repo at `revision`.
    * `local`: a local file or directory, by `fingerprint` (its content).
    * `remote`: objects on `s3://` (or another fsspec store), by `fingerprint` of their ETags and sizes.
    """

    model_config = ConfigDict(frozen=True)
    kind: IdentityKind
    revision: str | None = Field(default=None, description="Commit sha that is loaded (hub, git)")
    fingerprint: str | None = Field(
        default=None, description="Content fingerprint (local, remote, hub subfolder)"
    )
    requested: str | None = Field(
        default=None, description="The revision as the config spelled it (recorded, never hashed)"
    )

    @property
    def key(self) -> dict[str, str | None]:
        """The part that enters cache keys: content when known, else the commit."""
        return {"kind": self.kind, "id": self.fingerprint or self.revision}

    @property
    def value(self) -> str | None:
        """What a results row records: the commit loaded, else the content fingerprint."""
        return self.revision or self.fingerprint
