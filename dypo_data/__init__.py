"""dypo-data: generate, verify, store and inspect reasoning traces for DYPO distillation.

Importing this package is cheap: vLLM, torch and math-verify load lazily in the modules that need them.
"""

__version__ = "0.1.0"
