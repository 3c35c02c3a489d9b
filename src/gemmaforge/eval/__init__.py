"""Evaluation: generation-based metrics and base-versus-adapter reports."""
