"""dypo-train: the DYPO trainer (sample-level gate over teacher traces and policy rollout groups)."""

__version__ = "0.1.0"
