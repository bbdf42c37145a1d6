"""A fully cached re-run of the demo against its cold run, with the Prefect server already up.

Starts its own `prefect server start` on a free 127.0.0.1 port (stopped by PID at the end), then
runs `plantcad-flows demo` twice on a fresh prefix under a temporary directory, as a user would:
cold (everything scored), then again (everything from cache). Both wall-clock times include the
CLI's start-up; the second run must cost at most 10% of the first. The server's start-up is not
counted: the point is a nightly run that finds nothing new on a server that is always up.

    .venv/bin/python benchmarks/cached_rerun.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_tree import cli_env  # noqa: E402

from plantcad_flows.services.prefect_server import start_server  # noqa: E402


def demo(prefix: Path, env: dict[str, str], log: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "plantcad-flows"), "demo", "--prefix", str(prefix)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    seconds = time.perf_counter() - t0
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"demo failed ({proc.returncode}); see {log}")
    return seconds, proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="work here (and keep it) instead of a temporary directory")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="cached-rerun-"))
    work.mkdir(parents=True, exist_ok=True)
    server = start_server(home=work / "prefect-home", log_path=work / "prefect-server.log")
    env = cli_env(server.api_url, work)
    try:
        prefix = work / "demo"
        cold, out_cold = demo(prefix, env, work / "cold.log")
        cached, out_cached = demo(prefix, env, work / "cached.log")
    finally:
        server.stop()
    counts = [re.search(r"\d+ cells: .*", o) for o in (out_cold, out_cached)]
    print(f"cold run:    {cold:7.1f} s  ({counts[0].group(0) if counts[0] else '?'})")
    print(f"cached run:  {cached:7.1f} s  ({counts[1].group(0) if counts[1] else '?'})")
    print(f"logs and outputs: {work}")
    print(f"ratio={cached / cold:.3f} (target <= 0.10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
