"""The transparency report: how a model was trained, from its run directories and the store.

Example::

    from rlhfkit.report import build_report, write_report

    write_report(build_report(["runs/ppo"]), "report.html")
"""

from rlhfkit.report.build import build_report
from rlhfkit.report.data import ReportData
from rlhfkit.report.render import render_html, write_report

__all__ = ["ReportData", "build_report", "render_html", "write_report"]
