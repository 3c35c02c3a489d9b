"""A named workaround for one upstream deprecation warning.

PEFT 0.21's `PeftModel.__init__` probes `getattr(model, "is_gradient_checkpointing", True)`
(peft/peft_model.py, and peft/mixed_model.py), a property transformers 5 deprecated in favour
of `is_activation_checkpointing`. Every train, generate, chat, eval and export therefore
printed transformers' FutureWarning once per adapter wrap (82 times in one test run), about
code the user cannot change. The probe is PEFT's, not ours: gemmaforge never reads the old
property. Upstream: https://github.com/huggingface/peft (peft_model.py `PeftModel.__init__`;
transformers deprecation in https://github.com/huggingface/transformers modeling_utils.py).

The filter matches that one message only, so any other deprecation still shows. It is set
again before each wrap (cheap, and `warnings.filterwarnings` replaces an identical filter)
because test runners reset filters between tests. tests/test_runs.py checks both that the
warning is gone and that PEFT still probes the property: when PEFT stops, drop this module.
"""

from __future__ import annotations

import warnings

MESSAGE = r"`is_gradient_checkpointing` is deprecated"


def quiet_checkpointing_probe() -> None:
    """Hide transformers' FutureWarning for PEFT's `is_gradient_checkpointing` probe."""
    warnings.filterwarnings("ignore", message=MESSAGE, category=FutureWarning)
