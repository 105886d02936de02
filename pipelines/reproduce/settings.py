"""What the reproduction runs: the sizes of each variant and the methods it compares.

Three variants share every stage and differ only in size:
- full: the experiment of the report (3 learning rates x every method, then 3 seeds at each method's best rate);
- quick: one seed, fewer steps, the same stages (minutes);
- smoke: minimal sizes that run every stage (the test suite runs it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class TinyArch:
    layers: int
    hidden: int
    mlp: int

    def cli(self) -> list[str]:
        return ["--layers", str(self.layers), "--hidden", str(self.hidden), "--mlp", str(self.mlp)]


@dataclass(frozen=True)
class Method:
    name: str  # the run's method label in the report
    recipe: str  # a dypo-train recipe
    sets: tuple[str, ...] = ()  # extra --set overrides
    sft_share: float = 0.0  # sft-then-grpo: the share of the run's steps that are SFT


# The paper's comparison (Table 1) and its ablations (Table 3), each an online run on the same prompts.
METHODS: tuple[Method, ...] = (
    Method("dypo", "dypo"),
    Method("sft", "sft"),
    Method("grpo", "grpo"),
    Method("sft-then-grpo", "sft-then-grpo", sft_share=1 / 3),
    Method("static-mix", "static-mix"),
    Method("luffy", "luffy"),
    Method("dypo-no-gal", "dypo-no-gal"),
    Method("dypo-one-teacher", "dypo-one-teacher"),
    Method("dypo-no-grading", "dypo-no-grading"),
)
COMPARED = tuple(m.name for m in METHODS)
# The diagnosis of DYPO's gradient norm (full variant): its pre-clip norm is ~50x GRPO's. Which term carries it
# (GAL sums log-ratios over a whole completion where GRPO averages tokens), and does the clip hold DYPO back?
DIAGNOSIS_METHODS: tuple[Method, ...] = (
    Method("dypo-gal-0.01", "dypo", sets=("loss.gal_mode=additive", "loss.gal_coef=0.01")),  # GAL at 1/50 of RL
    Method("dypo-no-clip", "dypo", sets=("optim.max_grad_norm=0",)),
)
ALL_METHODS = METHODS + DIAGNOSIS_METHODS
MAIN = ("dypo", "sft", "grpo", "sft-then-grpo", "static-mix", "luffy")
ABLATIONS = ("dypo", "dypo-no-gal", "dypo-one-teacher", "dypo-no-grading")
DYNAMICS = ("dypo", "grpo", "sft-then-grpo")  # the methods whose per-step curves the report overlays
DIAGNOSIS = ("dypo", "grpo", "dypo-no-gal", *(m.name for m in DIAGNOSIS_METHODS))

# Teachers: names sort in this order, so the one-teacher ablation (the first teacher by name) keeps t1.
TEACHER_WORKED, TEACHER_COMPACT, TEACHER_NOISY = "t1-worked", "t2-compact", "t3-noisy"


@dataclass(frozen=True)
class Variant:
    name: str
    # problems: one synthetic list (kinds at difficulty `level`), split by position into distinct problems
    kinds: tuple[str, ...]
    level: int
    ood_kinds: tuple[str, ...]  # out of distribution: problems the policy was not trained on ...
    ood_level: int  # ... (by default two chained operations on the facts the training problems ask for one at a time)
    n_teacher: int  # problems with worked solutions the teachers learn from
    n_warm: int  # problems of the policy's SFT warm start
    n_train: int  # the RL training pool (prompts of the online runs)
    n_val: int  # validation slice: picks each method's learning rate
    n_test: int  # in-distribution test set
    n_ood: int  # out-of-distribution test set
    # teachers
    teacher_arch: TinyArch
    teacher_steps: int
    noisy_steps: int  # the noisy teacher is the compact style trained this many steps only
    teacher_lr: float
    teacher_batch: int
    m: int  # traces per teacher per training prompt
    teacher_temperature: float
    # policy and its warm start
    policy_arch: TinyArch
    warm_steps: int
    warm_lr: float
    warm_batch: int
    # online runs
    k: int
    max_tokens: int
    prompts_per_step: int
    steps: int
    lrs: tuple[float, ...]
    seeds: int
    eval_every: int
    eval_k: int
    methods: tuple[str, ...] = COMPARED

    def describe(self) -> dict:
        return asdict(self)


FULL = Variant(
    name="full",
    kinds=("operation",), level=1, ood_kinds=("arithmetic",), ood_level=1,
    n_teacher=300, n_warm=100, n_train=200, n_val=32, n_test=80, n_ood=80,
    teacher_arch=TinyArch(4, 128, 384), teacher_steps=800, noisy_steps=150, teacher_lr=2e-3, teacher_batch=32,
    m=2, teacher_temperature=0.7,
    policy_arch=TinyArch(2, 128, 256), warm_steps=300, warm_lr=2e-3, warm_batch=32,
    k=8, max_tokens=200, prompts_per_step=8, steps=60,
    lrs=(3e-4, 1e-3, 3e-3), seeds=3, eval_every=20, eval_k=4,
    methods=COMPARED + tuple(m.name for m in DIAGNOSIS_METHODS),
)
# quick: one seed at the rate the full run chose for most methods (3e-4; sft and static-mix chose 1e-3)
QUICK = replace(FULL, name="quick", teacher_steps=500, noisy_steps=100, warm_steps=200, steps=30, lrs=(3e-4,), seeds=1,
                eval_every=15, methods=COMPARED)
SMOKE = replace(
    FULL, name="smoke", n_teacher=64, n_warm=32, n_train=32, n_val=8, n_test=8, n_ood=8,
    teacher_arch=TinyArch(2, 64, 128), teacher_steps=4, noisy_steps=2, teacher_batch=16,
    policy_arch=TinyArch(2, 64, 128), warm_steps=2, warm_batch=16,
    m=1, k=4, max_tokens=48, prompts_per_step=2, steps=2, lrs=(1e-3,), seeds=1, eval_every=2, eval_k=2,
    methods=COMPARED,
)
VARIANTS = {v.name: v for v in (FULL, QUICK, SMOKE)}
