"""The one exception type the CLI, the API and the service turn into a clear message."""


class BoneAgeError(Exception):
    """A problem with the user's input or environment: reported as one line, never a traceback."""
