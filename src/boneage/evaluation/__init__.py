"""Evaluation stage: metrics, plots, HTML reports and model comparisons."""
