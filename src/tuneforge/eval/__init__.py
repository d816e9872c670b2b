"""Evaluation: metrics, eval loss, multiple choice, before/after reports."""
