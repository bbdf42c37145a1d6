"""Planning time of a 1,000-cell experiment grid: read grid.yaml, check it, expand every cell.

The grid is 10 models x 10 datasets x 5 learning rates x 2 seeds for the kubernetes target: each
cell gets a name, merged resources (models set GPUs, a hidden hyper-parameter overrides memory
on half the datasets), kubernetes job variables and a filled command. Timed end to end from the
YAML file (`plan_grid`), the median of several repetitions; nothing is submitted. The last line is
`plan_s=X.XXX` for scripts.

    .venv/bin/python benchmarks/grid_plan.py [--models 10 --datasets 10 --lrs 5 --seeds 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from plantcad_flows.grid.expand import plan_grid


def write_spec(path: Path, models: int, datasets: int, lrs: int, seeds: int) -> None:
    spec = {
        "project": "bench",
        "prefix": "s3://bucket/runs",
        "target": "kubernetes",
        "resources": {"memory": "16Gi", "tolerations": ["nvidia.com/gpu"]},
        "hparam": {"lr": [f"{i}e-5" for i in range(1, lrs + 1)], "seed": list(range(seeds))},
        "models": {
            f"model-{i}": {
                "command": "[python train.py --cpu](python train.py) --data <data> --lr <lr> --seed <seed>",
                "gpu_count": i % 4,
                "env": {"MODEL_INDEX": i},
            }
            for i in range(models)
        },
        "datasets": {
            f"dataset-{j}": {
                "hparam": {"_data": f"s3://bucket/data/{j}.parquet"} | ({"_memory": "64Gi"} if j % 2 else {}),
                "ephemeral_storage": "100Gi",
            }
            for j in range(datasets)
        },
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--datasets", type=int, default=10)
    parser.add_argument("--lrs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.yaml"
        write_spec(path, args.models, args.datasets, args.lrs, args.seeds)
        times, cells = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            cells = plan_grid(path)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"cells={len(cells)} distinct_names={len({c.name for c in cells})}")
    print(f"repeats={args.repeats} min_s={min(times):.3f} median_s={median:.3f} max_s={max(times):.3f}")
    print(f"per_cell_us={median / max(len(cells), 1) * 1e6:.1f}")
    print(f"example: {cells[-1].name}  {cells[-1].resources.summary()}")
    print(f"plan_s={median:.3f}")


if __name__ == "__main__":
    main()
