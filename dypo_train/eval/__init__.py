"""Evaluation of the weights being trained, every `eval.every` steps, on held-out prompt sets."""

from dypo_train.eval.periodic import HeldOutSet, PeriodicEval, load_held_out, longest_prompt, parse_sets

__all__ = ["HeldOutSet", "PeriodicEval", "load_held_out", "longest_prompt", "parse_sets"]
