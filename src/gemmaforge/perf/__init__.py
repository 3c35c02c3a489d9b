"""Performance: training-speed options, memory/time planning and the benchmark against a plain
transformers Trainer."""
