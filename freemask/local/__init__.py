"""The local front end: the embedded runner (``freemask.local.runner``, the whole pipeline in one
process) and its report (``freemask.local.report``). Nothing is imported here, so that the
pipeline's publish task, which writes the report, does not import every stage."""
