#!/usr/bin/env bash
# End-to-end demo on the embedded SmolLM2-135M-Instruct with vLLM on CPU:
#   synthetic problems -> teacher traces (m per prompt) + policy groups (k per prompt)
#   -> math-verify verdicts -> stats table -> a SQL query
#   -> a short offline DYPO run on those groups (per-step tiers and offline-data ratio)
#   -> SmolLM2 before and after that run, evaluated side by side on held-out problems.
# A rerun resumes: everything already in $STORE (and a finished training run) is skipped.
# Knobs (environment): STORE, N_PROMPTS, M, K, MAX_TOKENS, DIFFICULTY, KV_CACHE_GIB, TRAIN_STEPS,
# PROMPTS_PER_STEP, N_EVAL, EVAL_K. On a CPU without native bf16 (AVX2 only) the demo is sized down so it still takes
# minutes; DYPO_CPU_ISA=avx2|amx|... overrides the CPU detection (`dypo-data cpu` shows what it sees).
set -euo pipefail

STORE=${STORE:-demo_store}
CPU_LINE=$(dypo-data cpu)
if dypo-data cpu --json | python -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["native_bf16"] else 1)'; then
  SIZE="full size"
  N_PROMPTS=${N_PROMPTS:-48}
  PROMPTS_PER_STEP=${PROMPTS_PER_STEP:-8}
  N_EVAL=${N_EVAL:-16}
else
  SIZE="sized down (no native bf16: the model runs in float32, several times slower); N_PROMPTS=48 PROMPTS_PER_STEP=8 N_EVAL=16 for full size"
  N_PROMPTS=${N_PROMPTS:-24}
  PROMPTS_PER_STEP=${PROMPTS_PER_STEP:-4}
  N_EVAL=${N_EVAL:-8}
fi
EVAL_K=${EVAL_K:-2}
M=${M:-2}
K=${K:-4}
MAX_TOKENS=${MAX_TOKENS:-256}
DIFFICULTY=${DIFFICULTY:-1}
KV_CACHE_GIB=${KV_CACHE_GIB:-2}
TRAIN_STEPS=${TRAIN_STEPS:-3}
RUNS="$STORE.runs"
PROMPTS="$STORE.problems.jsonl"
HELD_OUT="$STORE.held-out.jsonl"
echo "== $CPU_LINE"
echo "== demo $SIZE: $N_PROMPTS prompts, $PROMPTS_PER_STEP per training step, $N_EVAL held-out problems"

echo "== 1/7 problems: $N_PROMPTS synthetic math problems (difficulty $DIFFICULTY) -> $PROMPTS, $N_EVAL more held out -> $HELD_OUT"
ALL="$STORE.all-problems.jsonl"
dypo-data synth --out "$ALL" -n "$((N_PROMPTS + N_EVAL))" --difficulty "$DIFFICULTY" --seed 0
head -n "$N_PROMPTS" "$ALL" > "$PROMPTS"
tail -n "$N_EVAL" "$ALL" > "$HELD_OUT"  # distinct problems: synth never repeats one
rm "$ALL"

echo "== 2/7 model: the embedded SmolLM2-135M-Instruct (converted once, then cached)"
dypo-data models smollm2

echo "== 3/7 generate: $M teacher traces and a group of $K policy rollouts per prompt (vLLM, eager, ${KV_CACHE_GIB} GiB KV cache)"
dypo-data generate --store "$STORE" --prompts "$PROMPTS" \
  --teacher smollm2-teacher=smollm2 -m "$M" \
  --policy smollm2 -k "$K" \
  --temperature 0.7 --max-tokens "$MAX_TOKENS" --kv-cache-gib "$KV_CACHE_GIB"

echo "== 4/7 verify: math-verify in a process pool"
dypo-data verify --store "$STORE" --workers 2

echo "== 5/7 stats and a query"
dypo-data stats --store "$STORE"
dypo-data sql --store "$STORE" \
  "SELECT tier, count(*) AS groups, round(avg(mean_reward), 3) AS mean_reward FROM groups GROUP BY tier ORDER BY tier"

echo "== 6/7 train: $TRAIN_STEPS steps of offline DYPO on the stored groups (easy skipped, hard -> SFT, mid -> GRPO + GAL)"
if [ -f "$RUNS/demo-dypo/checkpoints/latest" ]; then
  dypo-train run --resume "$RUNS/demo-dypo" --set run.max_steps="$TRAIN_STEPS"
else
  dypo-train run --recipe dypo --store "$STORE" --policy smollm2 --output-dir "$RUNS" --name demo-dypo \
    --max-steps "$TRAIN_STEPS" --set run.prompts_per_step="$PROMPTS_PER_STEP" --set run.micro_batch_size=4 \
    --set data.max_completion_tokens="$MAX_TOKENS" --set run.report_to=[]
fi
dypo-data sql --store "$STORE" \
  "SELECT step, max(value) FILTER (WHERE name = 'tier/hard') AS hard, max(value) FILTER (WHERE name = 'tier/mid') AS mid,
          max(value) FILTER (WHERE name = 'tier/offline_ratio') AS offline_ratio, round(max(value) FILTER (WHERE name = 'loss/total'), 4) AS loss
   FROM train_metrics WHERE run_id = 'demo-dypo' GROUP BY step ORDER BY step"

echo "== 7/7 eval: SmolLM2 before (SmolLM2-135M-Instruct) and after its training run (demo-dypo@$TRAIN_STEPS) on the $N_EVAL held-out problems, k=$EVAL_K"
dypo-data eval --store "$STORE" --model smollm2 --run "$RUNS/demo-dypo" --steps "$TRAIN_STEPS" \
  --prompts held-out="$HELD_OUT" -k "$EVAL_K" --max-tokens "$MAX_TOKENS" --kv-cache-gib "$KV_CACHE_GIB"
echo "store: $STORE  (try: dypo-data sql --store $STORE \"SELECT * FROM teacher_pool LIMIT 5\")"
echo "run:   $RUNS/demo-dypo  (checkpoints in Hugging Face format; tensorboard --logdir $RUNS)"
echo "eval:  dypo-data eval-report --store $STORE  (the stored evaluations side by side)"
echo "view:  dypo-data view --store $STORE  (traces, groups, the gate's decisions and the run in a browser, http://127.0.0.1:8765/)"
