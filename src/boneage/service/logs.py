"""The service's logging: the project's own loggers at INFO, the root and every third-party
logger at WARNING, one line a record and never a traceback (a traceback's frames and an
exception's text can carry a patient's name or identifier). docs/service.md says what is
logged."""

from __future__ import annotations

import logging


class OneLine(logging.Filter):
    """Drops tracebacks and stack traces from every record that reaches the handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


def configure_logging() -> logging.Handler:
    """One handler on the root logger (WARNING), the `boneage` loggers at INFO."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.addFilter(OneLine())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("boneage").setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
        lg.setLevel(logging.WARNING)
    return handler
