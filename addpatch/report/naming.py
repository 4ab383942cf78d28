"""File names derived from target names.

Rule (deterministic and reversible, so two targets never share a file):
ASCII letters, digits and ``_`` are kept as they are; every other character,
``-`` and ``.`` included, is replaced by ``-`` followed by the two lower-case hex
digits of each of its UTF-8 bytes. Examples::

    digit_0_1  -> digit_0_1
    C_1+O_2    -> C_1-2bO_2
    O_1<-C_0   -> O_1-3c-2dC_0

Because ``-`` itself is always escaped and every escape is exactly three
characters long, the original name can be read back from the file name.
"""

from __future__ import annotations

import string

_SAFE = frozenset(string.ascii_letters + string.digits + "_")


def safe_name(name: str) -> str:
    """Return `name` made safe for a file name by the rule in this module's docstring."""
    out: list[str] = []
    for char in name:
        if char in _SAFE:
            out.append(char)
        else:
            out.extend(f"-{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


def heatmap_stem(target: str) -> str:
    """File stem (no suffix) of the heatmap images of `target`: ``heatmap_<safe target>``."""
    return f"heatmap_{safe_name(target)}"


def analysis_name(run_id: int) -> str:
    """File name of the markdown analysis of one run: ``analysis_run<run_id>.md``."""
    return f"analysis_run{run_id}.md"
