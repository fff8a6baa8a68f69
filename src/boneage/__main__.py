"""`python -m boneage` is the `boneage` command."""

import sys

from boneage.cli import main

sys.exit(main())
