#!/usr/bin/env bash
# End-to-end demo on the embedded SmolLM2-135M-Instruct with vLLM on CPU:
#   synthetic problems -> teacher traces (m per prompt) + policy groups (k per prompt)
#   -> math-verify verdicts -> stats table -> a SQL query.
# A rerun resumes: everything already in $STORE is skipped.
# Knobs (environment): STORE, N_PROMPTS, M, K, MAX_TOKENS, DIFFICULTY, KV_CACHE_GIB.
set -euo pipefail

STORE=${STORE:-demo_store}
N_PROMPTS=${N_PROMPTS:-48}
M=${M:-2}
K=${K:-4}
MAX_TOKENS=${MAX_TOKENS:-256}
DIFFICULTY=${DIFFICULTY:-1}
KV_CACHE_GIB=${KV_CACHE_GIB:-2}
PROMPTS="$STORE.problems.jsonl"

echo "== 1/5 problems: $N_PROMPTS synthetic math problems (difficulty $DIFFICULTY) -> $PROMPTS"
dypo-data synth --out "$PROMPTS" -n "$N_PROMPTS" --difficulty "$DIFFICULTY" --seed 0

echo "== 2/5 model: the embedded SmolLM2-135M-Instruct (converted once, then cached)"
dypo-data models smollm2

echo "== 3/5 generate: $M teacher traces and a group of $K policy rollouts per prompt (vLLM, eager, ${KV_CACHE_GIB} GiB KV cache)"
dypo-data generate --store "$STORE" --prompts "$PROMPTS" \
  --teacher smollm2-teacher=smollm2 -m "$M" \
  --policy smollm2 -k "$K" \
  --temperature 0.7 --max-tokens "$MAX_TOKENS" --kv-cache-gib "$KV_CACHE_GIB"

echo "== 4/5 verify: math-verify in a process pool"
dypo-data verify --store "$STORE" --workers 2

echo "== 5/5 stats and a query"
dypo-data stats --store "$STORE"
dypo-data sql --store "$STORE" \
  "SELECT tier, count(*) AS groups, round(avg(mean_reward), 3) AS mean_reward FROM groups GROUP BY tier ORDER BY tier"
echo "store: $STORE  (try: dypo-data sql --store $STORE \"SELECT * FROM teacher_pool LIMIT 5\")"
