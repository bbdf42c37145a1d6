"""Deployment pull steps of our own, named in prefect.yaml by their dotted path.

Prefect runs pull steps on the worker, in the flow-run process, before it imports the flow. A
step is any importable function taking keyword inputs and returning a dict of string outputs.
"""

from __future__ import annotations

from pathlib import Path


def ensure_demo_data(directory: str = "data/synthetic") -> dict[str, str]:
    """Generate the synthetic benchmark under `directory` (relative to the working directory set
    by the previous pull step) unless it is already there; ~20 s on a laptop core.

    Returns:
        {"demo_data": absolute path}, available to later steps as `{{ <id>.demo_data }}`.
    """
    from plantcad_flows.benchmark.synthetic import ensure_benchmark

    ensure_benchmark(directory)
    return {"demo_data": str(Path(directory).resolve())}
