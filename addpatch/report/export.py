"""Rendering through vl-convert: PNG/SVG files and the offline JavaScript bundle."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import altair as alt
import vl_convert as vlc

PNG_SCALE = 2.0
"""PNG pixels per SVG pixel (2 gives crisp text on high-density screens)."""


@lru_cache(maxsize=1)
def vegalite_version() -> str:
    """The Vega-Lite version Altair writes (e.g. ``v6.4``), or vl-convert's latest."""
    major_minor = ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])
    bundled = vlc.get_vegalite_versions()
    return f"v{major_minor}" if major_minor in bundled else f"v{bundled[-1]}"


def write_images(spec: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` of a Vega-Lite spec; return (png, svg)."""
    version = vegalite_version()
    svg_path = out_dir / f"{stem}.svg"
    png_path = out_dir / f"{stem}.png"
    svg_path.write_text(vlc.vegalite_to_svg(spec, vl_version=version), encoding="utf-8")
    png_path.write_bytes(vlc.vegalite_to_png(spec, vl_version=version, scale=PNG_SCALE))
    return png_path, svg_path


@lru_cache(maxsize=1)
def javascript_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed in one classic script defining ``window.vegaEmbed``.

    Safe to inline in a ``<script>`` element: any ``</script`` is written ``<\\/script``.
    """
    # the stub makes `snippet` required; at run time it defaults to None (the default snippet)
    bundle = vlc.javascript_bundle(vl_version=vegalite_version())  # type: ignore[call-arg]
    return re.sub(r"</(script)", r"<\\/\1", bundle, flags=re.IGNORECASE)
