"""The local front end: the embedded runner (the whole pipeline in one process) and its report."""

from freemask.local.report import write_run_report
from freemask.local.runner import LocalRunReport, run_local

__all__ = ["LocalRunReport", "run_local", "write_run_report"]
