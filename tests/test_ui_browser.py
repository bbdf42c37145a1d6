"""The Prefect UI of the test server in a real headless Chromium (Debian `chromium`).

Chromium is driven through the Chrome DevTools Protocol over its websocket: open the completed
`zero-shot-eval/local` run, click its Artifacts tab, check that the results artifact is listed,
open the artifact and check the results table is rendered, open a curves artifact and check its
embedded PNGs are decoded and drawn (not a path), and save screenshots. Tests never
write into the repository: the run page screenshot is copied for the README only when
PLANTCAD_SCREENSHOT_DIR names a directory (`make screenshot` sets it to docs/img).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from servers import api, completed_local_run, stop

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT_DIR = os.environ.get("PLANTCAD_SCREENSHOT_DIR")


class Browser:
    """Just enough CDP: navigate, evaluate JavaScript, screenshot."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--window-size=1400,1000",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        from websockets.sync.client import connect

        self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024)
        self.ids = itertools.count(1)

    def call(self, method: str, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return res["result"].get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for_text(self, *texts: str, timeout: float = 60) -> str:
        """The page's text once it shows every one of `texts` (the UI renders lists and panels
        progressively, so what is on the page one moment is not all there will be)."""
        deadline = time.monotonic() + timeout
        body = ""
        while time.monotonic() < deadline:
            body = self.eval("document.body ? document.body.innerText : ''") or ""
            if all(t in body for t in texts):
                return body
            time.sleep(0.5)
        missing = [t for t in texts if t not in body]
        raise AssertionError(f"{missing!r} not shown within {timeout}s; page text: {body[:1500]!r}")

    # Scroll every scrollable element of the page by `step` viewports; true if anything moved.
    _SCROLL = (
        "((step) => { let moved = false;"
        " for (const el of [document.scrollingElement, ...document.querySelectorAll('*')]) {"
        "   if (!el || el.scrollHeight <= el.clientHeight + 4) continue;"
        "   const before = el.scrollTop;"
        "   el.scrollTop = step === 0 ? 0 : before + el.clientHeight * step;"
        "   if (el.scrollTop !== before) moved = true; }"
        " return moved; })(%s)"
    )

    def find_by_scrolling(self, *texts: str, timeout: float = 90) -> None:
        """Wait until each of `texts` has been on the page, scrolling down through lists the UI
        renders virtually (only the rows in view exist), then scroll back to the top."""
        deadline, seen = time.monotonic() + timeout, set()
        while time.monotonic() < deadline:
            body = self.eval("document.body ? document.body.innerText : ''") or ""
            seen |= {t for t in texts if t in body}
            if seen == set(texts):
                self.eval(self._SCROLL % 0)
                time.sleep(0.5)
                return
            if not self.eval(self._SCROLL % 0.7):  # at the bottom: start over (rows may still load)
                self.eval(self._SCROLL % 0)
            time.sleep(0.5)
        raise AssertionError(f"{sorted(set(texts) - seen)!r} not shown within {timeout}s")

    def click_text(self, text: str) -> bool:
        js = (
            "(() => { const want = %s;"
            " const els = [...document.querySelectorAll('button, a, [role=tab], li, span, div')]"
            "   .filter(e => e.innerText && e.innerText.trim() === want);"
            " const el = els[els.length - 1]; if (!el) return false; el.click(); return true; })()"
        ) % json.dumps(text)
        return bool(self.eval(js))

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            stop(self.proc)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian package chromium not installed")
def test_results_artifact_in_the_ui(stack, tmp_path):
    run = completed_local_run(stack)
    assert run["state_type"] == "COMPLETED"
    artifacts = api(
        stack.api_url, "POST", "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
    )
    # keys are scoped by the config: zero-shot-{kind}-{scope}
    results = next(a for a in artifacts if a["key"].startswith("zero-shot-results-"))
    summary = next(a for a in artifacts if a["key"].startswith("zero-shot-summary-"))
    curves = next(a for a in artifacts if a["key"].startswith("zero-shot-curves-"))
    table = results["data"] if isinstance(results["data"], list) else json.loads(results["data"])
    model = table[0]["model"]

    browser = Browser(tmp_path / "chromium-profile")
    try:
        browser.call("Page.enable")
        browser.goto(f"{stack.ui_url}/runs/flow-run/{run['id']}")
        browser.wait_for_text(run["name"], "Completed")
        deadline = time.monotonic() + 30
        while not browser.click_text("Artifacts"):  # the tab may render after the run's header
            assert time.monotonic() < deadline, "the flow run page has no Artifacts tab"
            time.sleep(0.5)
        browser.find_by_scrolling(results["key"], summary["key"])  # the list shows what is in view
        run_shot = tmp_path / "flow-run.png"
        browser.screenshot(run_shot)

        browser.goto(f"{stack.ui_url}/artifacts/artifact/{results['id']}")
        browser.wait_for_text(model, results["key"], "ci_low")
        browser.screenshot(tmp_path / "results-artifact.png")

        browser.goto(f"{stack.ui_url}/artifacts/artifact/{curves['id']}")
        browser.wait_for_text("ROC / PR curves")
        # every embedded PNG is asked to load (a lazy one below the fold would not) and counted once decoded
        drawn = (
            "(() => { const imgs = [...document.images].filter(i => i.src.startsWith('data:image/png'));"
            " imgs.forEach(i => { i.loading = 'eager'; });"
            " return imgs.filter(i => i.complete && i.naturalWidth > 100).length; })()"
        )
        # as many as the artifact embeds: ROC and PR per cell, PR only where AUPRC is the metric (SV)
        embedded = curves["data"].count("](data:image/png;base64,")
        assert embedded >= 1
        deadline = time.monotonic() + 60
        while (browser.eval(drawn) or 0) < embedded and time.monotonic() < deadline:
            time.sleep(0.5)
        assert browser.eval(drawn) == embedded  # every curve of the artifact shown, decoded
    finally:
        browser.close()

    for shot in (run_shot, tmp_path / "results-artifact.png"):
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_shot, Path(SCREENSHOT_DIR) / "flow-run.png")
