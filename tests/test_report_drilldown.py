"""Clicks a heatmap cell of a real run's default report in headless Chromium, offline.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: JSON
messages ending in NUL on file descriptors 3 and 4), so no extra package is needed. The click
is a real mouse event at the cell's place on the screen; the test then reads the drill-down
panel and compares it with the `cell_examples` query on the store, and checks that the page
made no request other than for itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from addpatch.experiment.reporting import examples_per_cell, report_runs
from addpatch.queries import get_query, run_query
from tests.test_queries import small_run  # noqa: F401  (the fixture: a real run in a store)
from tests.test_report_browser import OFFLINE_FLAGS, chromium

TARGET = "O_2"
CELL = (0, 11)  # layer, position (` is`)


class DevTools:
    """A headless Chromium and its DevTools protocol over a pair of pipes."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # high, close-on-exec copies, so that dup2 onto 3 and 4 in the child never collides
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w)]
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)

        def child_fds() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1400,1000",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                *OFFLINE_FLAGS,
                "about:blank",
            ],
            preexec_fn=child_fds,  # noqa: PLW1509  (only dup2 before exec)
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in high:
            os.close(fd)
        self.out = os.fdopen(to_chrome_w, "wb", buffering=0)
        self.inp = os.fdopen(from_chrome_r, "rb", buffering=0)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            chunk = self.inp.read(65536)
            assert chunk, "chromium closed the DevTools pipe"
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.out.write(json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply.get("result", {})
            self.events.append(reply)

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session,
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.out.close()
        self.inp.close()


FIND_CELL = """
(() => {
  const target = %s, layer = %d, position = %d;
  const view = window.__addpatchViews[target];
  const marks = [];
  (function walk(node) {
    if (!node) { return; }
    if (node.marktype && node.name === "cells_marks") { marks.push(node); }
    (node.items || []).forEach(walk);
  })(view.scenegraph().root);
  const items = marks[0].items;
  const index = items.findIndex(it => it.datum.layer === layer && it.datum.position === position);
  const section = Array.from(document.querySelectorAll("section[data-target]"))
    .find(s => s.dataset.target === target);
  const paths = section.querySelectorAll("g.cells_marks > path");
  paths[index].scrollIntoView({block: "center"});
  const box = paths[index].getBoundingClientRect();
  return {x: box.left + box.width / 2, y: box.top + box.height / 2, index: index,
          paths: paths.length, items: items.length};
})()
"""

READ_PANEL = """
(() => {
  const panel = document.getElementById("cell-detail");
  return {hidden: panel.hidden, run: panel.dataset.run, target: panel.dataset.target,
          layer: panel.dataset.layer, position: panel.dataset.position,
          figures: panel.querySelector(".figures").textContent,
          rows: Array.from(panel.querySelectorAll("tr.example")).map(tr =>
            [Number(tr.dataset.exampleId), tr.dataset.correct === "1",
             Array.from(tr.children).map(td => td.textContent)])};
})()
"""


@pytest.fixture(scope="module")
def clicked(small_run, tmp_path_factory):  # noqa: F811
    store, _, run_id = small_run
    root = tmp_path_factory.mktemp("drilldown")
    files = report_runs(store, [run_id], [TARGET, "digit_0_1"], root / "report")
    tools = DevTools(root / "profile")
    try:
        target_id = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target_id, "flatten": True})[
            "sessionId"
        ]
        tools.send("Network.enable", session=session)
        tools.send("Page.enable", session=session)
        tools.send("Page.navigate", {"url": files.html.resolve().as_uri()}, session)
        deadline = time.monotonic() + 120
        done = "document.getElementById('render-status')?.dataset.done === '1'"
        while not tools.evaluate(session, done):
            assert time.monotonic() < deadline, "the report never finished rendering"
            time.sleep(0.2)
        status = json.loads(
            tools.evaluate(session, "document.getElementById('render-status').textContent")
        )
        where = tools.evaluate(session, FIND_CELL % (json.dumps(TARGET), *CELL))
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            tools.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": where["x"], "y": where["y"], "button": "left", "clickCount": 1},
                session,
            )
        time.sleep(0.3)
        panel = tools.evaluate(session, READ_PANEL)
        requests = [
            e["params"]["request"]["url"]
            for e in tools.events
            if e.get("method") == "Network.requestWillBeSent"
        ]
    finally:
        tools.close()
    return store, run_id, files, status, where, panel, requests


def test_clicking_a_cell_shows_its_examples(clicked):
    store, run_id, _, status, where, panel, _ = clicked
    assert status["errors"] == [] and status["csp"] == []
    assert where["index"] >= 0 and where["paths"] == where["items"]
    assert panel["hidden"] is False
    assert (panel["run"], panel["target"]) == (str(run_id), TARGET)
    assert (int(panel["layer"]), int(panel["position"])) == CELL
    with store.connect(read_only=True) as conn:
        expected = run_query(
            conn,
            get_query("cell_examples"),
            {
                "run_id": run_id,
                "target": TARGET,
                "layer": CELL[0],
                "position": CELL[1],
                "per_cell": examples_per_cell(1),
            },
        )
        cells = run_query(conn, get_query("iia_by_cell"), {"run_id": run_id, "targets": TARGET})
    assert expected.height > 0
    shown = [(row[0], row[1]) for row in panel["rows"]]
    assert shown == list(zip(expected["example_id"], expected["correct"], strict=True))
    for (_, _, texts), row in zip(panel["rows"], expected.iter_rows(named=True), strict=True):
        assert texts[1] == row["base_prompt"] and texts[2] == row["cf_prompt"]
        assert texts[6] == str(row["label"])
    cell = cells.filter((pl.col("layer") == CELL[0]) & (pl.col("position") == CELL[1])).row(
        0, named=True
    )
    assert f"IIA {cell['iia']:.3f}" in panel["figures"]
    assert f"{cell['iia_low']:.3f}–{cell['iia_high']:.3f}" in panel["figures"]
    assert f"n = {cell['n']}" in panel["figures"]


def test_the_page_made_no_network_request(clicked):
    _, _, files, _, _, _, requests = clicked
    assert requests, "the page load itself should be seen"
    assert all(url == files.html.resolve().as_uri() for url in requests), requests
