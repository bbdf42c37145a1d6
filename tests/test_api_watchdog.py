"""The CLI's watchdog on its Prefect API (`services/api_watchdog.py`) against a real HTTP server on
loopback: quiet while `/api/health` answers, and it reports the server lost (naming it) once the
server has been gone for the bound. The end-to-end case (the CLI's own Prefect server killed
mid-scoring, exit 3, the next run resumes) is in `test_faults.py`."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from plantcad_flows.errors import ValidationError
from plantcad_flows.services.api_watchdog import EXIT_API_LOST, ApiWatchdog, lost_after_s, lost_message


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):
        pass


def test_a_server_that_goes_away_is_reported_lost_after_the_bound():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api"
    lost: list[tuple[str, float]] = []
    reported = threading.Event()
    dog = ApiWatchdog(url, lost_after=1.0, on_lost=lambda u, s: (lost.append((u, s)), reported.set()))
    dog.start()
    try:
        assert not reported.wait(2.5)  # answering: never lost
        server.shutdown()
        server.server_close()
        gone = time.monotonic()
        assert reported.wait(10), "not reported lost"
        waited = time.monotonic() - gone
    finally:
        dog.stop()
    [(ui, silent)] = lost
    assert ui == url.removesuffix("/api") and silent >= 1.0
    assert 1.0 - dog.poll <= waited < 5, waited  # silent since its last answer, polled
    line = lost_message(ui, silent)
    assert ui in line and f"exit {EXIT_API_LOST}" in line and "\n" not in line


def test_a_stopped_watchdog_reports_nothing():
    lost = []
    dog = ApiWatchdog("http://127.0.0.1:9/api", lost_after=0.4, on_lost=lambda *a: lost.append(a)).start()
    dog.stop()
    time.sleep(0.6)
    assert lost == []


@pytest.mark.parametrize("raw", ["soon", "0", "-5"])
def test_the_bound_must_be_a_positive_number(raw, monkeypatch):
    monkeypatch.setenv("PLANTCAD_API_LOST_AFTER", raw)
    with pytest.raises(ValidationError, match="PLANTCAD_API_LOST_AFTER"):
        lost_after_s()
    monkeypatch.setenv("PLANTCAD_API_LOST_AFTER", "12.5")
    assert lost_after_s() == 12.5
    monkeypatch.delenv("PLANTCAD_API_LOST_AFTER")
    assert lost_after_s() == 60.0
