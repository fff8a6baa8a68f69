"""Training stage: config, in-memory data with batch augmentation, Lightning module, runs."""
