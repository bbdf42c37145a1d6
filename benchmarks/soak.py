"""Soak: the demo config run again and again, each run SIGKILLed at a random moment, each kill
followed by a re-run that must recover.

One clean run on a prefix of its own gives the reference results and its duration T. Then N
rounds, each on a fresh prefix: `plantcad-flows eval` is started and SIGKILLed after a random
delay in [0.1 T, 0.9 T] (seeded), then run again to completion. Every shard file written under
the soak prefixes is watched (path, inode and mtime: an atomic rewrite is a new version), so a
shard scored twice is counted. It prints, per round, when the kill came and how the re-run ended, then:

    runs recovered: R/N
    shards computed more than once: K
    processes left behind by killed runs: P
    every final result equals the clean run's: True|False

It starts a Prefect server of its own on a free port (stopped by pid at the end) and uses the
demo's synthetic data and shipped tiny models; nothing is asserted, the figures are printed.

    .venv/bin/python benchmarks/soak.py                 # N=5, the demo config as `make demo` runs it
    .venv/bin/python benchmarks/soak.py --runs 3 --no-ray --max-size 32   # quicker
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fault_harness import metrics_by_cell, shard_files, start_eval, wait_gone  # noqa: E402

from plantcad_flows.benchmark.synthetic import demo_config, ensure_benchmark  # noqa: E402
from plantcad_flows.cluster.processes import stop_process_group  # noqa: E402
from plantcad_flows.services.prefect_server import start_server  # noqa: E402


class ShardWatch:
    """Every version of every shard file seen under a prefix, from a polling thread."""

    def __init__(self, prefix: Path, poll: float = 0.1):
        self.prefix, self.poll = prefix, poll
        self.versions: dict[str, set[tuple[int, int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ShardWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.scan()

    def scan(self) -> None:
        for p in shard_files(self.prefix):
            try:
                st = os.stat(p.path)
            except OSError:
                continue
            self.versions.setdefault(p.path, set()).add((st.st_ino, st.st_mtime_ns))

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self.scan()

    def computed_more_than_once(self) -> int:
        return sum(1 for v in self.versions.values() if len(v) > 1)


def write_config(path: Path, data_dir: Path, prefix: Path, no_ray: bool, max_size: int | None) -> Path:
    cfg = demo_config(data_dir, str(prefix))
    if no_ray:
        cfg["ray"] = {"enabled": False}
    if max_size:
        cfg["sampling"]["max_size"] = max_size
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds of kill + recovery (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="default: a temporary directory")
    parser.add_argument("--no-ray", action="store_true", help="score in threads (faster to start)")
    parser.add_argument("--max-size", type=int, help="examples per split (the demo: all 200)")
    args = parser.parse_args(argv)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="plantcad-soak-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    ensure_benchmark(data)
    server = start_server(home=work / "server-home", log_path=work / "server.log", timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_API_URL=server.api_url,
        PREFECT_HOME=str(work / "client-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    rng = random.Random(args.seed)
    try:
        clean_cfg = write_config(work / "clean.yaml", data, work / "clean", args.no_ray, args.max_size)
        t0 = time.monotonic()
        clean = start_eval(clean_cfg, work, env, "--results-json", str(work / "clean.json"), log_name="clean")
        clean.popen.wait()
        duration = time.monotonic() - t0
        if clean.popen.returncode != 0:
            print(clean.output()[-3000:])
            print("the clean run failed; nothing to compare with")
            return 1
        reference = metrics_by_cell(work / "clean.json")
        print(f"clean run: {duration:.0f} s, {len(reference)} cells")

        recovered, equal, left_behind, twice, killed = 0, True, 0, 0, 0
        for i in range(1, args.runs + 1):
            prefix = work / f"soak-{i}"
            soak_cfg = write_config(work / f"soak-{i}.yaml", data, prefix, args.no_ray, args.max_size)
            with ShardWatch(prefix) as watch:
                delay = rng.uniform(0.1, 0.9) * duration
                victim = start_eval(soak_cfg, work, env, log_name=f"killed-{i}")
                deadline = time.monotonic() + delay
                while victim.popen.poll() is None and time.monotonic() < deadline:
                    victim.record()
                    time.sleep(0.05)
                if victim.popen.poll() is None:
                    os.kill(victim.popen.pid, signal.SIGKILL)
                    victim.popen.wait()
                    what = f"SIGKILL at {delay:.1f} s"
                    killed += 1
                else:
                    what = f"finished before its kill at {delay:.1f} s"
                alive = wait_gone(victim.started, timeout=60)
                left_behind += len(alive)
                on_disk = len(shard_files(prefix))
                out = work / f"recovered-{i}.json"
                rerun = start_eval(soak_cfg, work, env, "--results-json", str(out), log_name=f"rerun-{i}")
                rerun.popen.wait()
                ok = rerun.popen.returncode == 0
                same = ok and metrics_by_cell(out) == reference
                recovered += ok
                equal &= same
            twice += watch.computed_more_than_once()
            print(
                f"round {i}: {what} ({on_disk} shard files on disk, {len(alive)} processes left); "
                f"re-run exit {rerun.popen.returncode}, result equals clean: {same}, "
                f"shards computed twice: {watch.computed_more_than_once()}"
            )
        print(f"runs killed: {killed}/{args.runs} (the others finished before their kill)")
        print(f"runs recovered: {recovered}/{args.runs}")
        print(f"shards computed more than once: {twice}")
        print(f"processes left behind by killed runs: {left_behind}")
        print(f"every final result equals the clean run's: {equal}")
        print(f"work directory: {work}")
        return 0
    finally:
        stop_process_group(server.process)


if __name__ == "__main__":
    sys.exit(main())
