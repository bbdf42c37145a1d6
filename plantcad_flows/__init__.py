"""plantcad-flows: evaluate DNA language models on the PlantCAD2 zero-shot benchmark.

The package `plantcad_flows` is the pure core (configs, task families and task files, sequence handling,
model loading, scoring, metrics, storage layout). It never imports Prefect; the Prefect shell
lives in the top-level `tasks/` and `flows/` packages.
"""

from pathlib import Path

__version__ = "0.1.0"

# The checkout this package runs from: where prefect.yaml and infra/ live, and what Ray ships.
REPO_ROOT = Path(__file__).resolve().parents[1]

# Bumped whenever a change alters what a step computes; it is part of every cache key.
CODE_VERSION = "2026.12.1"
