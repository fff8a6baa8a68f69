"""Data stage: label tables in every RSNA format, image readers, reproducible splits."""
