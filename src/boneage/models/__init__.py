"""Model stage: architectures built by name, sex fusion heads, weights + model card I/O."""
