"""Inference stage: load a checkpoint, replay its preprocessing, predict bone age."""
