"""Tests of addpatch.report on synthetic scores (no model, no browser)."""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from html import escape
from pathlib import Path

import polars as pl
import pytest

from addpatch.errors import BadInput
from addpatch.report import DEFAULT_THRESHOLD, ReportFiles, build_report, safe_name
from addpatch.report.heatmaps import heatmap, heatmap_spec
from addpatch.report.labels import position_label, with_labels
from addpatch.report.summary import carried_from_layer, summary_table
from addpatch.report.validate import check_scores

TOKENS = ["<bos>", "The", " sum", " of", " ", "2", "3", " and", " ", "4", "5", " is"]
LAST = len(TOKENS) - 1
SVG_NS = "{http://www.w3.org/2000/svg}"


@dataclass(frozen=True)
class Plan:
    """How one (run, target) is synthesized: best cell, carried-from layer or all zeros."""

    best: tuple[int, int] | None
    carry_from: int | None


# run_id -> (model, number of decoder layers); target -> run_id -> Plan
RUNS = {1: ("tiny-a", 3), 2: ("tiny-b", 4)}
PLANS = {
    "digit_0_1": {1: Plan((1, 6), 1), 2: Plan((2, 5), 3)},
    "C_1+O_2": {1: Plan((0, 10), None), 2: Plan((-1, 9), 1)},
    "O_1<-C_0": {1: Plan((2, LAST), 2), 2: Plan(None, None)},
}


def _iia(layer: int, pos: int, plan: Plan) -> float:
    """A peak at plan.best (0.97, unique) and a plateau >= 0.85 at the last token."""
    if plan.best is None:
        return 0.0
    bl, bp = plan.best
    if (layer, pos) == plan.best:
        return 0.97
    v = 0.9 - 0.15 * abs(layer - bl) - 0.2 * abs(pos - bp)
    if pos == LAST:
        carried = plan.carry_from is not None and layer >= plan.carry_from
        v = max(v, 0.85 + 0.01 * layer) if carried else min(v, 0.5)
    return round(min(max(v, 0.0), 0.96), 4)


def synthetic_scores() -> pl.DataFrame:
    """Two runs, three targets, known best cells, tokens with repeats."""
    rows = []
    for target, plans in PLANS.items():
        for run_id, (model, n_layers) in RUNS.items():
            for layer in range(-1, n_layers):
                for pos, tok in enumerate(TOKENS):
                    rows.append(
                        {
                            "run_id": run_id,
                            "model": model,
                            "num_digits": 2,
                            "target": target,
                            "layer": layer,
                            "position": pos,
                            "position_label": tok,
                            "iia": _iia(layer, pos, plans[run_id]),
                            "n": 200 + 3 * layer + pos,
                        }
                    )
    return pl.DataFrame(rows)


def synthetic_runs() -> list[dict]:
    """Run dicts with distinctive provenance values."""
    return [
        {
            "run_id": run_id,
            "model": model,
            "num_digits": 2,
            "keep_rate": 0.8125 if run_id == 1 else 0.5,
            "examples": 640 + run_id,
            "provenance": {
                "model_path": f"/models/{model}",
                "weights_sha256": f"deadbeef{run_id}cafe",
                "dtype": "float32",
                "seed": 1000 + run_id,
                "wall_time_s": 12.25 + run_id,
            },
        }
        for run_id, (model, _) in RUNS.items()
    ]


@pytest.fixture(scope="module")
def scores() -> pl.DataFrame:
    return synthetic_scores()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, scores: pl.DataFrame) -> ReportFiles:
    out = tmp_path_factory.mktemp("report")
    return build_report(scores, synthetic_runs(), out, title="Synthetic report")


# ---------------------------------------------------------------- PNG helpers


def png_chunks(data: bytes) -> tuple[int, int, bytes]:
    """(width, height, decompressed filtered image data) of a PNG, checking its structure."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def residual_variety(raw: bytes) -> int:
    """Distinct byte values in the filtered pixel stream.

    An image of one colour filters to almost only zeros (a handful of distinct values
    at most, whatever filters the encoder chose); a rendered chart gives hundreds.
    """
    return len(set(raw))


def assert_png_not_blank(path: Path, min_width: int, min_height: int) -> tuple[int, int]:
    """Assert `path` is a valid, non-trivial, multi-coloured PNG; return its size."""
    data = path.read_bytes()
    width, height, raw = png_chunks(data)
    assert width >= min_width and height >= min_height, (width, height)
    assert len(data) > 5_000, f"{path.name} is suspiciously small ({len(data)} bytes)"
    assert residual_variety(raw) > 64, f"{path.name} looks like a single colour"
    return width, height


# ---------------------------------------------------------------- SVG helpers


def mark_paths(svg_text: str, mark: str) -> list[ET.Element]:
    """The <path> items of every Vega mark group named `mark` (class ``<mark>_marks``)."""
    root = ET.fromstring(svg_text)
    items = []
    for group in root.iter(f"{SVG_NS}g"):
        if f"{mark}_marks" in group.get("class", "").split():
            items.extend(group.findall(f"{SVG_NS}path"))
    return items


def best_independently(scores: pl.DataFrame, run_id: int, target: str) -> dict:
    """Best cell of (run, target) computed here, independently of addpatch.report."""
    part = scores.filter((pl.col("run_id") == run_id) & (pl.col("target") == target))
    top = part.filter(pl.col("iia") == pl.col("iia").max())
    assert top.height == 1, "the synthetic data should have a unique best cell"
    return top.row(0, named=True)


# ---------------------------------------------------------------- tests


def test_files_exist_with_sanitized_names(report: ReportFiles) -> None:
    assert report.html.name == "report.html" and report.html.is_file()
    stems = [f"heatmap_{safe_name(t)}" for t in PLANS]
    assert [p.name for p in report.pngs] == [f"{s}.png" for s in stems]
    assert [p.name for p in report.svgs] == [f"{s}.svg" for s in stems]
    assert "heatmap_C_1-2bO_2.png" in {p.name for p in report.pngs}
    assert "heatmap_O_1-3c-2dC_0.svg" in {p.name for p in report.svgs}
    assert [p.name for p in report.markdowns] == ["analysis_run1.md", "analysis_run2.md"]
    for path in [*report.pngs, *report.svgs, *report.markdowns]:
        assert path.is_file() and path.parent == report.html.parent


def test_safe_name_rule() -> None:
    assert safe_name("digit_0_1") == "digit_0_1"
    assert safe_name("C_1+O_2") == "C_1-2bO_2"
    assert safe_name("O_1<-C_0") == "O_1-3c-2dC_0"
    assert safe_name("a/b.c d") == "a-2fb-2ec-20d"
    assert safe_name("ü") == "-c3-bc"
    names = ["a+b", "a-2bb", "a_b", "a b", "a<-b", "a-b"]
    assert len({safe_name(n) for n in names}) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", safe_name(n)) for n in names)


def test_png_is_valid_and_not_blank(report: ReportFiles) -> None:
    for png, svg in zip(report.pngs, report.svgs, strict=True):
        width, height = assert_png_not_blank(png, 400, 150)
        root = ET.fromstring(svg.read_text(encoding="utf-8"))
        # PNGs are rendered at scale 2 from the same spec as the SVG
        assert width == 2 * int(float(root.get("width")))
        assert height == 2 * int(float(root.get("height")))


def test_svg_has_one_rect_per_cell(report: ReportFiles, scores: pl.DataFrame) -> None:
    for target, svg in zip(PLANS, report.svgs, strict=True):
        text = svg.read_text(encoding="utf-8")
        expected = scores.filter(pl.col("target") == target).height
        cells = mark_paths(text, "cells")
        assert len(cells) == expected
        fills = {c.get("fill") for c in cells}
        localized = [p for p in PLANS[target].values() if p.best is not None]
        assert len(fills) > (5 if localized else 0)
        # one outline per run that has a best cell (none for an all-zero run)
        assert len(mark_paths(text, "best")) == len(localized)


def test_facets_when_two_models(report: ReportFiles, scores: pl.DataFrame) -> None:
    svg = report.svgs[0].read_text(encoding="utf-8")
    assert "tiny-a · 2 digits" in svg and "tiny-b · 2 digits" in svg
    labelled = with_labels(check_scores(scores)).filter(pl.col("target") == "digit_0_1")
    assert "facet" in heatmap_spec(labelled, "digit_0_1")
    one_run = labelled.filter(pl.col("run_id") == 1)
    assert "facet" not in heatmap_spec(one_run, "digit_0_1")
    # reports skip Altair's schema check and its copy of the data: both kinds of spec pass the
    # check, and equal the chart Altair writes with its data
    for frame in (labelled, one_run):
        spec = heatmap_spec(frame, "digit_0_1", validate=True)
        assert spec == heatmap_spec(frame, "digit_0_1") == heatmap(frame, "digit_0_1").to_dict()


def test_the_javascript_bundle_is_built_once_and_kept(monkeypatch) -> None:
    from addpatch.caches import cache_dir
    from addpatch.report import export

    export.javascript_bundle.cache_clear()
    built = export.javascript_bundle()
    assert "vegaEmbed" in built and "</script" not in built.lower()
    [kept] = cache_dir().glob("vega-embed-bundle-*.js")
    # a later process reads the kept file and builds nothing
    export.javascript_bundle.cache_clear()
    build = export.vlc.javascript_bundle
    monkeypatch.setattr(export.vlc, "javascript_bundle", lambda **_: pytest.fail("rebuilt"))
    assert export.javascript_bundle() == built
    # a damaged (cut short) file is rebuilt, not served
    kept.write_text(built[: len(built) // 2], encoding="utf-8")
    export.javascript_bundle.cache_clear()
    monkeypatch.setattr(export.vlc, "javascript_bundle", build)
    assert export.javascript_bundle() == built
    assert kept.read_text(encoding="utf-8").endswith(export.BUNDLE_END)
    export.javascript_bundle.cache_clear()


def test_axes_order_embed_bottom_and_distinct_positions(scores: pl.DataFrame) -> None:
    labelled = with_labels(check_scores(scores)).filter(pl.col("target") == "digit_0_1")
    spec = heatmap_spec(labelled, "digit_0_1")
    layers = [layer for layer in spec["spec"]["layer"] if "color" in layer.get("encoding", {})]
    enc = layers[0]["encoding"]
    # Vega-Lite lists a discrete y domain top to bottom: last layer on top, Embed last
    assert enc["y"]["sort"] == ["3", "2", "1", "0", "Embed"]
    x = enc["x"]["sort"]
    assert x == [position_label(i, t) for i, t in enumerate(TOKENS)]
    assert "4: ·" in x and "8: ·" in x  # repeated " " tokens stay distinct
    assert spec["spec"]["layer"][0]["encoding"]["color"]["scale"]["domain"] == [0.0, 1.0]


def test_same_colour_scale_for_all_targets(report: ReportFiles, scores: pl.DataFrame) -> None:
    specs = []
    labelled = with_labels(check_scores(scores))
    for target in PLANS:
        spec = heatmap_spec(labelled.filter(pl.col("target") == target), target)
        specs.append(spec["spec"]["layer"][0]["encoding"]["color"])
    assert all(s == specs[0] for s in specs)
    # every SVG legend reads 0.0 .. 1.0
    for svg in report.svgs:
        text = svg.read_text(encoding="utf-8")
        assert ">0.0<" in text and ">1.0<" in text


def test_html_is_self_contained(report: ReportFiles) -> None:
    html = report.html.read_text(encoding="utf-8")
    assert len(html) > 500_000, "the Vega bundle should be inlined"
    assert "window.vegaEmbed" in html
    assert not re.search(r"<script[^>]*\ssrc\s*=", html, re.I)
    assert not re.search(r"<link\b", html, re.I)
    assert not re.search(r"\ssrc\s*=\s*[\"']?\s*(https?:)?//", html, re.I)
    assert not re.search(r"url\(\s*[\"']?\s*(https?:)?//", html, re.I)
    assert not re.search(r"@import", html, re.I)
    assert "default-src 'none'" in html  # CSP: the browser itself refuses any fetch


def test_html_contents(report: ReportFiles, scores: pl.DataFrame) -> None:
    html = report.html.read_text(encoding="utf-8")
    for target in PLANS:
        assert escape(target) in html
    for run in synthetic_runs():
        for value in run["provenance"].values():
            assert escape(str(value)) in html
        assert f"{run['keep_rate']:.1%}" in html
    assert html.count('<section id="chart-') == len(PLANS)
    # per-chart expected cell counts are what the browser test compares against
    for target in PLANS:
        n = scores.filter(pl.col("target") == target).height
        assert f'data-target="{escape(target)}" data-cells="{n}"' in html
    assert "Synthetic report" in html


def test_markdown_best_cell_matches_polars(report: ReportFiles, scores: pl.DataFrame) -> None:
    pattern = re.compile(
        r"Best cell: layer (\S+), position `(\d+): [^`]*`, IIA ([0-9.]+) \(n = (\d+), "
    )
    for run_id, md_path in zip(RUNS, report.markdowns, strict=True):
        md = md_path.read_text(encoding="utf-8")
        sections = dict(re.findall(r"## `([^`]+)`\n(.*?)(?=\n## |\Z)", md, re.S))
        assert list(sections) == list(PLANS)
        for target, plan in PLANS.items():
            body = sections[target]
            if plan[run_id].best is None:
                assert "Not localized: no cell's 95% interval lies above" in body
                continue
            exp = best_independently(scores, run_id, target)
            layer, pos, iia, n = pattern.search(body).groups()
            assert layer == ("Embed" if exp["layer"] == -1 else str(exp["layer"]))
            assert int(pos) == exp["position"]
            assert float(iia) == pytest.approx(exp["iia"], abs=5e-4)
            assert int(n) == exp["n"]
            assert (exp["layer"], exp["position"]) == plan[run_id].best


def test_markdown_carried_and_regions(report: ReportFiles) -> None:
    md = {p.name: p.read_text(encoding="utf-8") for p in report.markdowns}
    run1, run2 = md["analysis_run1.md"], md["analysis_run2.md"]
    assert "Carried by last token (`11: ·is`) from layer: 1" in run1  # digit_0_1
    assert "from layer: —" in run1  # C_1+O_2 never reaches 0.8 at the last token
    assert "from layer: 1" in run2  # C_1+O_2 in run 2
    assert "position `6: 3`: layer 1" in run1  # the peak alone in its column
    assert "position `11: ·is`: layers 1–2" in run1  # last token of digit_0_1
    assert "Filter keep rate: 81.2%" in run1
    for text in md.values():
        for section in text.split("\n## ")[1:]:
            assert len([ln for ln in section.splitlines() if ln.startswith("  - ")]) <= 19


def constructed(values_at_last: dict[int, float]) -> pl.DataFrame:
    """One run/target: last position 3 holds `values_at_last`, others 0.9 at layer 0."""
    rows = []
    for layer in range(-1, 4):
        for pos in range(4):
            if pos == 3:
                iia = values_at_last.get(layer, 0.0)
            else:
                iia = 0.9 if (layer, pos) == (0, 1) else 0.1
            rows.append(
                {
                    "run_id": 7,
                    "model": "m",
                    "num_digits": 3,
                    "target": "t",
                    "layer": layer,
                    "position": pos,
                    "position_label": f"tok{pos}",
                    "iia": iia,
                    "n": 10,
                }
            )
    return check_scores(pl.DataFrame(rows))


@pytest.mark.parametrize(
    ("values", "threshold", "expected"),
    [
        ({-1: 0.1, 0: 0.5, 1: 0.79, 2: 0.8, 3: 0.95}, 0.8, 2),  # >= is inclusive
        ({-1: 0.1, 0: 0.5, 1: 0.79, 2: 0.8, 3: 0.95}, 0.9, 3),  # threshold is a parameter
        ({-1: 0.1, 0: 0.85, 1: 0.2, 2: 0.9}, 0.8, 0),  # first layer, not a stable run
        ({-1: 0.81}, 0.8, -1),  # the embeddings count
        ({0: 0.5, 3: 0.79}, 0.8, None),  # never
    ],
)
def test_carried_by_last_token(values: dict, threshold: float, expected: int | None) -> None:
    df = constructed(values)
    row = carried_from_layer(df, threshold).row(0, named=True)
    assert row["last_position"] == 3 and row["last_label"] == "tok3"
    assert row["carried_from"] == expected
    summary = summary_table(df, threshold).row(0, named=True)
    assert summary["carried_from"] == expected


def test_summary_in_html(report: ReportFiles, scores: pl.DataFrame) -> None:
    summary = summary_table(check_scores(scores), DEFAULT_THRESHOLD)
    assert summary.height == len(RUNS) * len(PLANS)
    got = {(r["run_id"], r["target"]): r for r in summary.iter_rows(named=True)}
    assert got[(1, "digit_0_1")]["carried_from"] == 1
    assert got[(2, "digit_0_1")]["carried_from"] == 3
    assert got[(1, "C_1+O_2")]["carried_from"] is None
    assert got[(2, "C_1+O_2")]["best_layer"] == -1
    html = report.html.read_text(encoding="utf-8")
    table = html[html.index('<table id="summary">') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr") == 1 + summary.height
    assert "<td>Embed</td><td>9: 4</td>" in table  # run 2, C_1+O_2 best cell
    assert "<td>—</td>" in table  # never carried


def test_bad_input(tmp_path: Path, scores: pl.DataFrame) -> None:
    runs = synthetic_runs()
    with pytest.raises(BadInput, match="lacks column.*iia"):
        build_report(scores.drop("iia"), runs, tmp_path)
    with pytest.raises(BadInput, match="empty"):
        build_report(scores.clear(), runs, tmp_path)
    with pytest.raises(BadInput, match="run_id"):
        build_report(scores, runs[:1], tmp_path)
    with pytest.raises(BadInput, match="outside 0..1"):
        build_report(scores.with_columns(pl.col("iia") * 100), runs, tmp_path)
    with pytest.raises(BadInput, match="threshold"):
        build_report(scores, runs, tmp_path, threshold=0)
    assert not list(tmp_path.iterdir()), "nothing is written for bad input"


def test_null_iia_cells_are_blank_and_ignored() -> None:
    import vl_convert as vlc

    from addpatch.report.analysis import analysis_markdown
    from addpatch.report.export import vegalite_version

    df = constructed({2: 0.95}).with_columns(
        pl.when((pl.col("layer") == 2) & (pl.col("position") == 3))
        .then(None)
        .otherwise(pl.col("iia"))
        .alias("iia")
    )
    svg = vlc.vegalite_to_svg(heatmap_spec(with_labels(df), "t"), vl_version=vegalite_version())
    assert len(mark_paths(svg, "cells")) == df.height - 1
    run = {"run_id": 7, "model": "m", "num_digits": 3, "keep_rate": 1.0, "examples": 10}
    md = analysis_markdown(run, df, 0.8)
    assert "Best cell: layer 0, position `1: tok1`, IIA 0.900" in md
    assert "from layer: —" in md


def test_analysis_caps_region_lines() -> None:
    from addpatch.report.analysis import MAX_REGION_LINES, layer_ranges, region_lines
    from addpatch.report.summary import Region

    assert layer_ranges([-1, 0, 1, 4, 6, 7]) == "Embed–1, 4, 6–7"
    found = [Region(p, f"t{p}", (0, 1)) for p in range(40)]
    lines = region_lines(found, 0.8)
    assert len(lines) == MAX_REGION_LINES
    assert lines[-1] == "  - … and 22 more positions"


def test_report_says_which_examples_it_counts(tmp_path: Path, scores: pl.DataFrame) -> None:
    everything = build_report(scores, synthetic_runs(), tmp_path / "all")
    informative = build_report(scores, synthetic_runs(), tmp_path / "inf", informative=True)
    html_all = everything.html.read_text(encoding="utf-8")
    html_inf = informative.html.read_text(encoding="utf-8")
    assert 'data-informative="0"' in html_all and "every kept example" in html_all
    assert 'data-informative="1"' in html_inf and "informative examples" in html_inf
    assert "95% Wilson score interval" in html_all
