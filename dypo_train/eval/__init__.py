"""Evaluation of the weights being trained, every `eval.every` steps, on held-out prompt sets."""

from dypo_train.eval.periodic import PeriodicEval, parse_sets

__all__ = ["PeriodicEval", "parse_sets"]
