"""Inference: batched generation for eval, streaming replies, one model with many adapters,
the terminal (generate, chat) and the OpenAI-compatible server."""
