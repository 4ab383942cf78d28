"""Display labels for layers, token positions and runs.

* Layer -1 is shown as ``Embed``; decoder layers by their index (``0``, ``1``, ...).
* A position is shown as ``<index>: <token text>`` so repeated tokens stay distinct.
  In the token text a space is drawn as ``·``, newlines/tabs/other control characters
  are escaped (``\\n``, ``\\t``, ``\\x01``) and an empty token is ``(empty)``.
* A run's panel is ``<model> · <N> digits``; ``· run <id>`` is appended when two runs
  share a model and digit width.
"""

from __future__ import annotations

import unicodedata

import polars as pl

EMBED_LABEL = "Embed"
NEVER = "—"  # shown where there is no value (no layer, no baseline)
EMBED_LAYER = -1


def visible_token(text: str) -> str:
    """Return token `text` with spaces and control characters made visible."""
    if text == "":
        return "(empty)"
    out: list[str] = []
    for char in text:
        if char == " ":
            out.append("·")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def layer_label(layer: int) -> str:
    """``Embed`` for layer -1, else the layer index as text."""
    return EMBED_LABEL if layer == EMBED_LAYER else str(layer)


def position_label(position: int, token: str) -> str:
    """``<index>: <visible token>``, e.g. ``3: ·sum``."""
    return f"{position}: {visible_token(token)}"


def with_labels(scores: pl.DataFrame) -> pl.DataFrame:
    """Add ``layer_label``, ``x_label`` and ``panel`` columns to a validated scores frame."""
    runs = scores.select("run_id", "model", "num_digits").unique()
    shared = runs.group_by("model", "num_digits").len().filter(pl.col("len") > 1)
    shared_keys = {(m, d) for m, d, _ in shared.iter_rows()}
    panels = {
        run_id: _panel(model, digits, run_id if (model, digits) in shared_keys else None)
        for run_id, model, digits in runs.iter_rows()
    }
    return scores.with_columns(
        pl.col("layer").map_elements(layer_label, return_dtype=pl.String).alias("layer_label"),
        pl.struct("position", "position_label")
        .map_elements(
            lambda s: position_label(s["position"], s["position_label"]), return_dtype=pl.String
        )
        .alias("x_label"),
        pl.col("run_id").replace_strict(panels, return_dtype=pl.String).alias("panel"),
    )


def _panel(model: str, digits: int, run_id: int | None) -> str:
    """Facet title of one run."""
    unit = "digit" if digits == 1 else "digits"
    text = f"{model} · {digits} {unit}"
    return text if run_id is None else f"{text} · run {run_id}"
