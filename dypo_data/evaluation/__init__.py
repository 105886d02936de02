"""Evaluation: metrics over graded samples (avg@k, unbiased pass@j, maj@k, bootstrap intervals).

    from dypo_data.evaluation import avg_per_problem, estimate
    est = estimate(avg_per_problem(correct), seed=0)  # correct: per problem, True/False/None per sample

Pure functions of stdlib and numpy: importing this package loads neither vLLM, torch nor math-verify.
How ungradable samples (correct None) are handled is set out in `metrics.py`.
"""

from dypo_data.evaluation.metrics import (
    Estimate,
    MajorityVote,
    SampleCounts,
    avg_per_problem,
    bootstrap_interval,
    count_samples,
    count_ungradable,
    estimate,
    maj_per_problem,
    majority_vote,
    mean_length,
    mean_over_problems,
    pass_at,
    pass_at_per_problem,
    truncation_rate,
)

__all__ = [
    "Estimate",
    "MajorityVote",
    "SampleCounts",
    "avg_per_problem",
    "bootstrap_interval",
    "count_samples",
    "count_ungradable",
    "estimate",
    "maj_per_problem",
    "majority_vote",
    "mean_length",
    "mean_over_problems",
    "pass_at",
    "pass_at_per_problem",
    "truncation_rate",
]
