"""Figures and reports for continual-learning runs."""
