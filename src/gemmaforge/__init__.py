"""gemmaforge: private, on-device LoRA fine-tuning of Gemma 4, Gemma 3n and Gemma 3."""

__version__ = "0.1.0"
