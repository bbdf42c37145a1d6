"""The README's screenshot of a grid run in the Prefect UI, from a real run (`make grid-screenshot`).

Starts, on 127.0.0.1 and in a temporary directory: a Prefect server, `plantcad-flows setup` for
the `run-command/local` deployment, a process worker on pool `local`; submits
configs/grid-example.yaml (12 cells, outputs in the temporary directory); opens the grid's run
in headless Chromium, shows its subflow runs, and saves the page to docs/img/grid-run.png.
Everything started here is stopped by its PID at the end.

    .venv/bin/python scripts/grid_screenshot.py [--out docs/img/grid-run.png]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the CDP browser of the UI tests
sys.path.insert(0, str(REPO))

from plantcad_flows.cluster.processes import stop_process_group  # noqa: E402
from plantcad_flows.services.prefect_server import prefect_executable, start_server  # noqa: E402

BIN = Path(sys.executable).parent
SPEC = REPO / "configs" / "grid-example.yaml"


def api(url: str, method: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"{url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def run(cmd: list[str], env: dict, cwd: Path, timeout: float = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{out[-3000:]}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "img" / "grid-run.png"))
    args = parser.parse_args()
    from test_ui_browser import Browser

    tmp = Path(tempfile.mkdtemp(prefix="grid-screenshot-"))
    server = start_server(home=tmp / "server-home", log_path=tmp / "server.log", timeout=240)
    procs = [server.process]
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_API_URL=server.api_url,
            PREFECT_HOME=str(tmp / "client-home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_WORKER_QUERY_SECONDS="1",
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        )
        run(
            [
                str(BIN / "plantcad-flows"),
                "setup",
                "--env-file",
                str(tmp / "none.env"),
                "--deployment",
                "run-command/local",
            ],
            env,
            REPO,
        )
        log = open(tmp / "worker.log", "ab")
        worker = subprocess.Popen(
            [prefect_executable(), "worker", "start", "--pool", "local", "--type", "process"],
            cwd=tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(worker)
        out = run([str(BIN / "plantcad-flows"), "grid", "submit", str(SPEC), "--poll", "1"], env, tmp)
        print(out.strip().splitlines()[-2])
        runs = api(
            server.api_url,
            "POST",
            "/flow_runs/filter",
            {"flow_runs": {"tags": {"all_": ["grid:grid-example"]}}},
        )
        [grid_run] = [r for r in runs if not any(t.startswith("cell:") for t in r["tags"])]
        cells = sorted(r["name"] for r in runs if r["id"] != grid_run["id"])

        browser = Browser(tmp / "chromium-profile")
        try:
            browser.call("Page.enable")
            browser.call(
                "Emulation.setDeviceMetricsOverride",
                width=1500,
                height=1250,
                deviceScaleFactor=1,
                mobile=False,
            )
            browser.goto(f"{server.ui_url}/runs/flow-run/{grid_run['id']}")
            browser.wait_for_text(grid_run["name"])
            browser.wait_for_text("Completed")
            if not browser.click_text("Subflow Runs"):
                raise SystemExit("no 'Subflow Runs' tab on the grid run's page")
            browser.wait_for_text(cells[0])
            time.sleep(2)  # let the timeline finish drawing
            out_path = Path(args.out)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            browser.screenshot(out_path)
        finally:
            browser.close()
        print(f"grid run {grid_run['name']}: {len(cells)} subflow runs; screenshot {out_path}")
    finally:
        for proc in reversed(procs):
            stop_process_group(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
