"""The one exception type the CLI, the API and the service turn into a clear message."""


class BoneAgeError(Exception):
    """A problem with the user's input or environment: reported as one line, never a traceback."""


class TooLarge(BoneAgeError):
    """An input over a size limit (pixels, decoded or inflated bytes): HTTP 413."""


def install_hint(extras: str) -> str:
    """The install command for optional extras, from the checkout and under the constraints
    (a plain `pip install boneage[...]` would take the index's package and could pull a
    multi-GB CUDA torch)."""
    return f"pip install -c constraints.txt -e '.[{extras}]' (in the boneage checkout)"
