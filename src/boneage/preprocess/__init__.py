"""Preprocessing stage: array steps composed into a Pipeline that serialises to JSON."""
