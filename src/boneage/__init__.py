"""boneage: skeletal (bone) age in months from a hand radiograph and the child's sex.

Stages, each a sub-package, data flowing one way:
data -> preprocess -> models -> training -> evaluation / inference -> service.
"""

from boneage.errors import BoneAgeError

__version__ = "0.1.0"
__all__ = ["BoneAgeError", "__version__", "load_model"]


def load_model(spec: str = "default", backend: str | None = None, tta: bool = True,
               explain: bool = True):
    """Load a model for prediction (see boneage.inference.api); imported lazily so that
    `import boneage` stays light."""
    from boneage.inference.api import load_model as _load

    return _load(spec, backend, tta, explain)
