"""Secrets of a grid's cells: references in the job variables, never values.

A grid spec may not hold a secret (an `env` name that looks like one is rejected when the spec is
loaded). Secrets come from a `.env` file instead, and reach a cell in three ways, none of which
puts the value where the spec, the cell's name, its parameters, its logs or a manifest could show
it:

* the shell saves each `.env` value as a Prefect Secret block named `block_name(KEY)`
  (`WANDB_API_KEY` -> `dotenv-wandb-api-key`);
* on a process pool, the cell's `env` job variable gets `KEY: "{{ prefect.blocks.secret.<block> }}"`,
  a reference the worker resolves when it starts the run;
* on a kubernetes pool, the cell's `secret_env` job variable gets a `valueFrom.secretKeyRef` to
  key `KEY` of the Kubernetes Secret `plantcad-secrets` (create it from the same file:
  `kubectl create secret generic plantcad-secrets --from-env-file=.env`). A cell's `secret_env`
  replaces the pool default, so the default entries are kept in front.

`PREFECT_*` keys are settings of the client, not secrets of a cell, and are left out. The run-command
flow is told the names (never the values) so that it can redact them from the command's output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from plantcad_flows.errors import ValidationError
from plantcad_flows.grid.expand import GridCell

KUBERNETES_SECRET = "plantcad-secrets"
BLOCK_PREFIX = "dotenv-"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def cell_secret_names(keys: Iterable[str]) -> list[str]:
    """The `.env` keys that become cell secrets: valid names, `PREFECT_*` settings left out.

    Raises:
        ValidationError: a key that is not a valid environment variable name.
    """
    names = []
    for key in keys:
        if not _ENV_NAME.match(key):
            raise ValidationError(".env", key, "not a valid environment variable name")
        if not key.startswith("PREFECT_"):
            names.append(key)
    return sorted(set(names))


def block_name(key: str) -> str:
    """The Prefect Secret block holding `.env` key `key` (block names: lower case, digits, -)."""
    return BLOCK_PREFIX + re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-")


def block_reference(key: str) -> str:
    """The job-variable template a worker resolves to the block's value when a run starts."""
    return "{{ prefect.blocks.secret.%s }}" % block_name(key)


def secret_key_ref(key: str, secret: str = KUBERNETES_SECRET) -> dict[str, Any]:
    """A container env entry that reads `key` from a Kubernetes Secret (optional, as the pool's)."""
    return {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}


def with_secrets(
    cell: GridCell, names: Sequence[str], base_secret_env: Sequence[dict[str, Any]] = ()
) -> GridCell:
    """The cell with references to the secrets `names` added to its job variables.

    Args:
        cell: an expanded cell.
        names: `.env` keys (`cell_secret_names`).
        base_secret_env: the kubernetes pool's default `secret_env` entries, kept in front.
    """
    if not names:
        return cell
    jv = dict(cell.job_variables)
    if cell.pool == "kubernetes":
        entries = [dict(e) for e in base_secret_env]
        have = {e.get("name") for e in entries}
        entries += [secret_key_ref(n) for n in names if n not in have]
        jv["secret_env"] = entries
    else:
        env = {n: block_reference(n) for n in names}
        env.update(jv.get("env") or {})  # a value the spec sets for the cell wins
        jv["env"] = env
    return cell.model_copy(update={"job_variables": jv})
