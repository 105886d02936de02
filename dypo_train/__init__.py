"""dypo-train: DYPO's sample-level gate and its baselines on Hugging Face Accelerate.

Layers (imports go downwards): ops (pure maths) <- stream (store reader) <- loop (trainer) and
online (rollouts and weight sync) <- cli. `import dypo_train` loads none of them.
"""

__version__ = "0.1.0"
