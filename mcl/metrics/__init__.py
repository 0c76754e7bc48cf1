"""Continual-learning metrics over accuracy matrices and answer matching for generated text."""
