"""The repo's run index (`runs.json`) and the dataset card (`README.md`) rendered from it.

The index lists every run published to the repo, one entry per folder: publishing a run into a
folder replaces whatever run was there (PlantCAD's `results/step-N/...` folders are per
checkpoint), and a run published again replaces its own entry. The card follows
lm-evaluation-harness's details datasets: a `results` config and one config per cell
(model x task x split), each with one split per run and `latest`, the newest run that has it.
Both are functions of the index alone, with no clock: publishing the same run twice renders the
same bytes, so the second publish changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from plantcad_flows.errors import ValidationError
from plantcad_flows.publish.bundle import CELLS_DIR, RunBundle, config_name

INDEX = "runs.json"
CARD = "README.md"
INDEX_VERSION = 1
LATEST = "latest"
RESULTS_CONFIG = "results"


def run_entry(bundle: RunBundle, folder: str) -> dict[str, Any]:
    """What the index keeps about one published run."""
    return {
        "run": bundle.run,
        "split": config_name(bundle.run),
        "folder": folder,
        "time": bundle.time,
        "models": bundle.models,
        "steps": bundle.steps,
        "code_versions": bundle.code_versions,
        "plan": bundle.plan,
        "results": f"{folder}/results.parquet" if "results.parquet" in bundle.files else None,
        "cells": [
            {"config": c.config_name, "path": f"{folder}/{CELLS_DIR}/{c.directory}/predictions.parquet"}
            for c in bundle.cells
        ],
    }


def read_index(data: bytes | None) -> dict[str, Any]:
    """The index the repo holds (an empty one when it holds none).

    Raises:
        ValidationError: the file is not an index this version can read.
    """
    if data is None:
        return {"schema_version": INDEX_VERSION, "runs": []}
    try:
        index = json.loads(data)
    except ValueError as e:
        raise ValidationError(INDEX, "<repo file>", f"not JSON ({e})") from None
    version = index.get("schema_version") if isinstance(index, dict) else None
    if not isinstance(version, int) or version > INDEX_VERSION or not isinstance(index.get("runs"), list):
        raise ValidationError(
            INDEX, version, f"not a run index this version reads (schema_version <= {INDEX_VERSION})"
        )
    return index


def _order(entry: dict[str, Any]) -> tuple[str, str]:
    return (entry.get("time") or "", entry["run"])


def merge(index: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The index with `entry` in place of any run in the same folder or of the same name."""
    kept = [e for e in index["runs"] if e["folder"] != entry["folder"] and e["run"] != entry["run"]]
    # split names are the run names made `\w+`: two names may meet (`a-1`, `a_1`), and `latest`
    # is taken; the later-published run gets a suffix, kept in the index from then on
    taken, split, n = {e["split"] for e in kept} | {LATEST}, entry["split"], 2
    while split in taken:
        split, n = f"{entry['split']}_{n}", n + 1
    return {"schema_version": INDEX_VERSION, "runs": sorted([*kept, {**entry, "split": split}], key=_order)}


def index_bytes(index: dict[str, Any]) -> bytes:
    return (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()


def _configs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One config for the results, one per cell; each with a split per run and `latest`."""
    files: dict[str, list[tuple[str, str]]] = {RESULTS_CONFIG: []}
    for entry in runs:  # oldest first, so the last file of a config is its latest
        if entry.get("results"):
            files[RESULTS_CONFIG].append((entry["split"], entry["results"]))
        for cell in entry.get("cells", []):
            files.setdefault(cell["config"], []).append((entry["split"], cell["path"]))
    out = []
    for name in [RESULTS_CONFIG, *sorted(n for n in files if n != RESULTS_CONFIG)]:
        if not files[name]:
            continue
        splits = [{"split": split, "path": path} for split, path in files[name]]
        out.append(
            {"config_name": name, "data_files": [*splits, {"split": LATEST, "path": files[name][-1][1]}]}
        )
    return out


def render_card(index: dict[str, Any], repo: str) -> str:
    """The dataset card: metadata (configs and splits) and a table of the published runs."""
    runs = index["runs"]
    meta = {
        "pretty_name": "PlantCAD2 zero-shot evaluation results",
        "tags": ["plantcad-flows", "evaluation", "dna-language-model"],
        "configs": _configs(runs),
    }
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, default_flow_style=False).rstrip(),
        "---",
        "",
        "# PlantCAD2 zero-shot evaluation results",
        "",
        "Published by `plantcad-flows publish`. Each run below is a split of every config "
        f"(`{RESULTS_CONFIG}` and one per model x task x split); `{LATEST}` is the newest run that has it.",
        "",
        "| run (split) | folder | recorded (UTC) | models | steps | code version |",
        "|---|---|---|---|---|---|",
    ]
    for e in reversed(runs):
        steps = ", ".join(str(s) for s in e.get("steps", [])) or "-"
        lines.append(
            f"| {e['run']} (`{e['split']}`) | `{e['folder']}` | {e.get('time') or '-'} | "
            f"{', '.join(e.get('models', [])) or '-'} | {steps} | {', '.join(e.get('code_versions', [])) or '-'} |"
        )
    lines += [
        "",
        "## What each run's folder holds",
        "",
        "* `results.json`, `results.parquet`: one row per model x task x split, every metric with its "
        "95% bootstrap interval (`*_ci_low`, `*_ci_high`) and the resolved model and data revisions",
        "* `summary.md`: the run's summary; `config.json`: the evaluation config",
        "* `identities.json`: per cell, its cache key, model and dataset revisions, checkpoint step, code version",
        "* `leaderboard/`: the run's leaderboard files, when it has them",
        f"* `{CELLS_DIR}/<cell>/predictions.parquet`: per-example predictions; `metrics.json`, "
        "`step_info.json` (provenance), `intervals-*.json`",
        "",
        f"`{INDEX}` is the index this card is rendered from.",
        "",
        "```python",
        "from datasets import load_dataset",
        f'load_dataset("{repo}", "{RESULTS_CONFIG}", split="{LATEST}")',
        "```",
        "",
    ]
    return "\n".join(lines)
