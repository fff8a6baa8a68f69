"""The one exception type the CLI, the API and the service turn into a clear message."""


class BoneAgeError(Exception):
    """A problem with the user's input or environment: reported as one line, never a traceback."""


class TooLarge(BoneAgeError):
    """An input over a size limit (pixels, decoded or inflated bytes): HTTP 413."""
