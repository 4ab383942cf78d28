"""Rendering through vl-convert: PNG/SVG files and the offline JavaScript bundle."""

from __future__ import annotations

import contextlib
import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import altair as alt
import vl_convert as vlc

from addpatch.caches import cache_dir, write_cache_file

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
    svg = vlc.vegalite_to_svg(spec, vl_version=version)
    svg_path.write_text(svg, encoding="utf-8")
    # the PNG rasterizes that SVG (the same bytes as rendering the spec again, in a third of
    # the time)
    png_path.write_bytes(vlc.svg_to_png(svg, scale=PNG_SCALE))
    return png_path, svg_path


@lru_cache(maxsize=1)
def javascript_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed in one classic script defining ``window.vegaEmbed``.

    Safe to inline in a ``<script>`` element: any ``</script`` is written ``<\\/script``.
    vl-convert takes ~4 s to build it, so it is kept in the cache directory, one file per
    vl-convert and Vega-Lite version.
    """
    version = vegalite_version()
    cached = cache_dir() / f"vega-embed-bundle-{metadata.version('vl-convert-python')}-{version}.js"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = cached.read_text(encoding="utf-8")
        if text.endswith(BUNDLE_END):  # a whole file (written atomically, but check anyway)
            return text.removesuffix(BUNDLE_END)
    # the stub makes `snippet` required; at run time it defaults to None (the default snippet)
    bundle = vlc.javascript_bundle(vl_version=version)  # type: ignore[call-arg]
    bundle = re.sub(r"</(script)", r"<\\/\1", bundle, flags=re.IGNORECASE)
    write_cache_file(cached, bundle + BUNDLE_END)
    return bundle


BUNDLE_END = "\n// end of the addpatch cache file\n"
