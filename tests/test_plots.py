"""Curves drawn from many threads at once (as cells finish on the flow's thread pool) are the
same valid PNGs as curves drawn one at a time, and drawing never touches pyplot's global state."""

from __future__ import annotations

import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from plantcad_flows.results.plots import curve_pngs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _case(i: int) -> tuple[np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(i)
    labels = rng.integers(0, 2, 200)
    labels[:2] = (0, 1)
    scores = labels * (0.2 + 0.1 * i) + rng.normal(size=200)
    return labels, scores, f"cell {i}"


def _pixels(png: bytes) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(png), format="png")


def test_concurrent_drawing_gives_the_serial_pngs():
    cases = [_case(i) for i in range(12)]
    serial = [curve_pngs(*c) for c in cases]
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            threaded = list(pool.map(lambda c: curve_pngs(*c), cases))
            for i, (a, b) in enumerate(zip(serial, threaded)):
                assert set(b) == {"roc.png", "pr.png"}
                for name in b:
                    assert b[name].startswith(PNG_MAGIC), (i, name)
                    assert _pixels(b[name]).shape == (400, 400, 4)
                    # a curve drawn onto another thread's axes would change the pixels
                    assert np.array_equal(_pixels(a[name]), _pixels(b[name])), (i, name)
    # different data draws different pictures (the comparison above can fail)
    assert not np.array_equal(_pixels(serial[0]["roc.png"]), _pixels(serial[5]["roc.png"]))


def test_one_class_has_no_curve_and_pyplot_is_never_imported():
    assert curve_pngs(np.zeros(5), np.arange(5.0), "x") == {}
    code = (
        "import sys, numpy as np\n"
        "from plantcad_flows.results.plots import curve_pngs\n"
        "out = curve_pngs(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.3, 0.7]), 't', with_roc=False)\n"
        "assert list(out) == ['pr.png'], out\n"
        "print('pyplot' if 'matplotlib.pyplot' in sys.modules else 'clean')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "clean"
