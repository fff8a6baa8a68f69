"""The service's and the DICOM node's logging: the project's own loggers at INFO, the root
and every third-party logger at WARNING, one line a record and never a traceback (a
traceback's frames and an exception's text can carry a patient's name or identifier). A value
from the network (a UID, a body part) can hold a newline or a terminal escape: every control
character is written escaped, so one line is one event and no peer can forge a line. Python
warnings go through the same handler. docs/service.md says what is logged."""

from __future__ import annotations

import logging
import warnings

_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(32), 127)} | {10: "\\n", 13: "\\r", 9: "\\t"}


def one_line(text: str) -> str:
    """`text` with every control character escaped (\\n, \\x1b ...)."""
    return text.translate(_ESCAPES)


class OneLine(logging.Formatter):
    """One line a record: no traceback or stack, control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return one_line(super().format(record))


def _warning_line(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"{category.__name__}: {message}"


def configure_logging() -> logging.Handler:
    """One handler on the root logger (WARNING), the `boneage` loggers at INFO."""
    handler = logging.StreamHandler()
    handler.setFormatter(OneLine("%(asctime)s %(name)s %(levelname)s %(message)s"))
    warnings.formatwarning = _warning_line  # not the source line on a second line
    logging.captureWarnings(True)
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
