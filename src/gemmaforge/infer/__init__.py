"""Inference: batched generation from a base or adapted model (eval, chat and serve build on it)."""
