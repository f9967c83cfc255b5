"""``oodflow report``: one self-contained HTML page per evaluation (see :func:`write_report`)."""

from ood_flow.report.build import ReportResult, write_report

__all__ = ["ReportResult", "write_report"]
