"""Opens report.html in headless Chromium, offline, and checks every chart rendered.

Needs Debian's Chromium on PATH: ``apt-get install -y chromium``. Without it the test
fails (it never skips). The page writes a JSON status into ``<pre id="render-status">``
once all Vega views have rendered; Chromium's ``--dump-dom`` hands it back.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import zlib
from html import unescape
from pathlib import Path

import polars as pl
import pytest

from addpatch.report import ReportFiles, build_report

CHROMIUM_HINT = "Chromium is not on PATH; install it with: apt-get install -y chromium"
WINDOW = (1400, 2000)
# Every network request must fail: no proxy answers on port 9 and no name resolves.
OFFLINE_FLAGS = [
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]
TOKENS = ["<bos>", "Add", " ", "1", "2", " and", " ", "3", "4", " :"]
TARGETS = {"digit_0_1": (1, 4), "C_1+O_2": (0, 8), "O_1<-C_0": None}  # best cell or all 0
RUNS = {3: ("tiny-a", 2), 4: ("tiny-b", 3)}  # run_id -> (model, decoder layers)


def browser_scores() -> pl.DataFrame:
    """Two models, three targets (one all zero), known best cells."""
    rows = []
    for target, best in TARGETS.items():
        for run_id, (model, n_layers) in RUNS.items():
            for layer in range(-1, n_layers):
                for pos, tok in enumerate(TOKENS):
                    iia = 0.0
                    if best is not None:
                        iia = max(
                            0.0, 0.95 - 0.2 * abs(layer - best[0]) - 0.15 * abs(pos - best[1])
                        )
                    rows.append(
                        {
                            "run_id": run_id,
                            "model": model,
                            "num_digits": 2,
                            "target": target,
                            "layer": layer,
                            "position": pos,
                            "position_label": tok,
                            "iia": iia,
                            "n": 128,
                        }
                    )
    return pl.DataFrame(rows)


def browser_runs() -> list[dict]:
    return [
        {
            "run_id": run_id,
            "model": model,
            "num_digits": 2,
            "keep_rate": 0.9,
            "examples": 128,
            "provenance": {"model_path": f"/m/{model}", "seed": run_id},
        }
        for run_id, (model, _) in RUNS.items()
    ]


def chromium() -> str:
    """Path of the chromium binary; fails the test (never skips) when it is missing."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(CHROMIUM_HINT, pytrace=False)
    return path


def run_chromium(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on `page`, offline, with a fresh profile."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *OFFLINE_FLAGS,
        "--virtual-time-budget=10000",
        *extra,
        page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportFiles, dict, Path]:
    """Build the report, dump its DOM after rendering and take a screenshot."""
    chromium()
    root = tmp_path_factory.mktemp("browser")
    files = build_report(browser_scores(), browser_runs(), root / "report")
    dom = run_chromium(files.html, root / "profile-dom", "--dump-dom").stdout
    match = re.search(r'<pre id="render-status"[^>]*>(.*?)</pre>', dom, re.S)
    assert match and match.group(1).strip(), "the page never wrote its render status"
    status = json.loads(unescape(match.group(1)))
    shot = root / "screenshot.png"
    run_chromium(
        files.html,
        root / "profile-shot",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--screenshot={shot}",
    )
    return files, status, shot


def test_chromium_installed() -> None:
    assert shutil.which("chromium"), CHROMIUM_HINT


def test_every_chart_rendered(rendered: tuple[ReportFiles, dict, Path]) -> None:
    _, status, _ = rendered
    assert status["errors"] == []
    assert status["csp"] == [], "the page tried to load something from outside"
    assert status["views"] == len(TARGETS)
    scores = browser_scores()
    by_target = {c["target"]: c for c in status["charts"]}
    assert list(by_target) == list(TARGETS)
    for target, best in TARGETS.items():
        chart = by_target[target]
        expected = scores.filter(pl.col("target") == target).height
        assert chart["expected"] == expected
        assert chart["cells"] == expected, f"{target}: {chart['cells']} of {expected} cells drawn"
        assert chart["best"] == (len(RUNS) if best is not None else 0)


def test_screenshot_not_blank(rendered: tuple[ReportFiles, dict, Path]) -> None:
    _, _, shot = rendered
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == WINDOW
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    # A page of one colour filters to a handful of byte values; charts give ~256.
    assert len(set(raw)) > 64, "the screenshot looks blank"
    nonzero = sum(1 for b in raw[::97] if b)
    assert nonzero > len(raw[::97]) * 0.01, "the screenshot is almost uniform"


def test_a_notebook_chart_draws_offline_with_the_inlined_bundle(tmp_path: Path) -> None:
    """`enable_offline_charts`' HTML (what a Jupyter cell shows) draws every heatmap cell in
    a browser that can reach nothing."""
    from addpatch.report.charts import heatmap_chart, offline_chart_html

    scores = browser_scores()
    spec = heatmap_chart(scores, "digit_0_1").to_dict()
    page = tmp_path / "cell-output.html"
    page.write_text(f"<html><body>{offline_chart_html(spec)}</body></html>", encoding="utf-8")
    dom = run_chromium(page, tmp_path / "profile", "--dump-dom").stdout
    groups = re.findall(r'<g class="mark-rect role-mark cells_marks".*?</g>', dom, re.S)
    assert len(groups) == len(RUNS)  # one panel per run
    drawn = [p for g in groups for p in re.findall(r'<path aria-label="[^"]*Target: digit_0_1;', g)]
    assert len(drawn) == scores.filter(pl.col("target") == "digit_0_1").height
