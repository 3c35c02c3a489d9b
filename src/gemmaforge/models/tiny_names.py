"""Names of the tiny random model families, kept free of torch imports.

The CLI validates `gemmaforge tiny FAMILY` against this tuple without loading torch;
`models/tiny.py` builds the models and imports the tuple from here.
"""

from __future__ import annotations

TINY_FAMILIES = ("gemma3", "gemma3-vision", "gemma3n", "gemma4", "gemma4-moe", "gemma4-dense")
