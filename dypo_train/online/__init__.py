"""Online rollouts: an in-process vLLM engine that follows the trainer's weights, and the step's
rollouts written to the store and graded.

    from dypo_train.online import RolloutEngine, record_rollouts, rollout_sampling, rollout_seed

Importing this package does not import vLLM, torch or math-verify; `RolloutEngine()` does.
"""

from dypo_train.online.engine import RolloutEngine, RolloutSample, rollout_sampling, rollout_seed
from dypo_train.online.rollouts import record_rollouts, rollout_rows

__all__ = ["RolloutEngine", "RolloutSample", "record_rollouts", "rollout_rows", "rollout_sampling", "rollout_seed"]
