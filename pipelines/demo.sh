#!/usr/bin/env bash
# End-to-end demo on the embedded SmolLM2-135M-Instruct with vLLM on CPU:
#   synthetic problems -> teacher traces (m per prompt) + policy groups (k per prompt)
#   -> math-verify verdicts -> stats table -> a SQL query
#   -> a short offline DYPO run on those groups (per-step tiers and offline-data ratio).
# A rerun resumes: everything already in $STORE (and a finished training run) is skipped.
# Knobs (environment): STORE, N_PROMPTS, M, K, MAX_TOKENS, DIFFICULTY, KV_CACHE_GIB, TRAIN_STEPS.
set -euo pipefail

STORE=${STORE:-demo_store}
N_PROMPTS=${N_PROMPTS:-48}
M=${M:-2}
K=${K:-4}
MAX_TOKENS=${MAX_TOKENS:-256}
DIFFICULTY=${DIFFICULTY:-1}
KV_CACHE_GIB=${KV_CACHE_GIB:-2}
TRAIN_STEPS=${TRAIN_STEPS:-3}
RUNS="$STORE.runs"
PROMPTS="$STORE.problems.jsonl"

echo "== 1/6 problems: $N_PROMPTS synthetic math problems (difficulty $DIFFICULTY) -> $PROMPTS"
dypo-data synth --out "$PROMPTS" -n "$N_PROMPTS" --difficulty "$DIFFICULTY" --seed 0

echo "== 2/6 model: the embedded SmolLM2-135M-Instruct (converted once, then cached)"
dypo-data models smollm2

echo "== 3/6 generate: $M teacher traces and a group of $K policy rollouts per prompt (vLLM, eager, ${KV_CACHE_GIB} GiB KV cache)"
dypo-data generate --store "$STORE" --prompts "$PROMPTS" \
  --teacher smollm2-teacher=smollm2 -m "$M" \
  --policy smollm2 -k "$K" \
  --temperature 0.7 --max-tokens "$MAX_TOKENS" --kv-cache-gib "$KV_CACHE_GIB"

echo "== 4/6 verify: math-verify in a process pool"
dypo-data verify --store "$STORE" --workers 2

echo "== 5/6 stats and a query"
dypo-data stats --store "$STORE"
dypo-data sql --store "$STORE" \
  "SELECT tier, count(*) AS groups, round(avg(mean_reward), 3) AS mean_reward FROM groups GROUP BY tier ORDER BY tier"

echo "== 6/6 train: $TRAIN_STEPS steps of offline DYPO on the stored groups (easy skipped, hard -> SFT, mid -> GRPO + GAL)"
if [ -f "$RUNS/demo-dypo/checkpoints/latest" ]; then
  dypo-train run --resume "$RUNS/demo-dypo" --set run.max_steps="$TRAIN_STEPS"
else
  dypo-train run --recipe dypo --store "$STORE" --policy smollm2 --output-dir "$RUNS" --name demo-dypo \
    --max-steps "$TRAIN_STEPS" --set run.prompts_per_step=8 --set run.micro_batch_size=4 \
    --set data.max_completion_tokens="$MAX_TOKENS" --set run.report_to=[]
fi
dypo-data sql --store "$STORE" \
  "SELECT step, max(value) FILTER (WHERE name = 'tier/hard') AS hard, max(value) FILTER (WHERE name = 'tier/mid') AS mid,
          max(value) FILTER (WHERE name = 'tier/offline_ratio') AS offline_ratio, round(max(value) FILTER (WHERE name = 'loss/total'), 4) AS loss
   FROM train_metrics WHERE run_id = 'demo-dypo' GROUP BY step ORDER BY step"
echo "store: $STORE  (try: dypo-data sql --store $STORE \"SELECT * FROM teacher_pool LIMIT 5\")"
echo "run:   $RUNS/demo-dypo  (checkpoints in Hugging Face format; tensorboard --logdir $RUNS)"
