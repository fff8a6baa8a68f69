"""boneage: skeletal (bone) age in months from a hand radiograph and the child's sex.

Stages, each a sub-package, data flowing one way:
data -> preprocess -> models -> training -> evaluation / inference -> service.
"""

from boneage.errors import BoneAgeError

__version__ = "0.1.0"
__all__ = ["BoneAgeError", "__version__"]
