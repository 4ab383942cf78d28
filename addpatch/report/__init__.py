"""Reports of interchange-intervention results: heatmaps, summary, analyses, provenance.

`build_report` writes, into one folder:

* ``report.html`` – one self-contained page (Vega bundle inlined, works offline);
* ``heatmap_<target>.png`` / ``.svg`` per target (see `safe_name` for the file-name rule);
* ``analysis_run<run_id>.md`` per run.
"""

from addpatch.report.build import HTML_NAME, ReportFiles, build_report
from addpatch.report.html import CellExamples
from addpatch.report.naming import safe_name
from addpatch.report.summary import DEFAULT_THRESHOLD

__all__ = [
    "CellExamples",
    "DEFAULT_THRESHOLD",
    "HTML_NAME",
    "ReportFiles",
    "build_report",
    "safe_name",
]
