#!/usr/bin/env bash
# The study behind docs/recipes.md: the seed's model trained from scratch by recipes/seed.toml (the seed's own recipe)
# and by recipes/cpu-hour.toml, scored on held-out stories in bits per character at fixed points of training time.
# Runs go to runs/ttq/ (out of git); the table and the figure go to docs/studies/.
#
#   bash docs/studies/time_to_quality.sh          # everything; a second call skips what is done, resumes cut runs
#   MINUTES=30 RECIPES=cpu-hour bash docs/studies/time_to_quality.sh
#   AT_ONCE=1 bash ...                            # the recipes side by side, one core each (the same numbers)
#
# Time: a point "at N minutes" is the iteration that N minutes of training steps reach at the step time measured apart
# from the runs (bench's training-step worker, seed config, 3 rounds, median), as the pinv study does: the runs' own
# wall time also holds their evals, the study's held-out scoring and whatever else the machine did.
# Data: the two .txt samples in $SHARED and the stories of TinyStories-shard-sample.json that are not held out are
# trained on (and fit the tokenizer); held out are the first $HELDOUT stories of the JSON sample that occur nowhere in
# the training text (checked below), scored whole with `cli.py eval`.
# Each run is trained in segments, one per point (--init_from=resume, bit-exact), with the schedule of the recipe's
# full length (--lr_decay_iters fixed) and an eval (and checkpoint) every 50 iterations, so that a checkpoint is at
# every point; the evals do not change the training (no dropout, their own batches).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared/data/tinystories}
STUDY=runs/ttq
MINUTES=${MINUTES:-60}
EVERY=${EVERY:-10}
RECIPES=${RECIPES:-"cpu-hour seed"}
HELDOUT=${HELDOUT:-400}
mkdir -p "$STUDY"

# held out, and the training text: the JSON sample's first $HELDOUT stories found in neither .txt file, and the rest
if [ ! -f "$STUDY/heldout.json" ]; then
  $PY - "$SHARED" "$HELDOUT" "$STUDY" <<'PYEOF'
import json, os, sys
shared, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
txt = [f"{shared}/TinyStories-train-sample.txt", f"{shared}/TinyStoriesV2-GPT4-train-sample.txt"]
seen = {s.strip() for f in txt for s in open(f, encoding="utf-8").read().split("<|endoftext|>")}
stories = json.load(open(f"{shared}/TinyStories-shard-sample.json", encoding="utf-8"))
held = [s for s in stories if s["story"].strip() not in seen][:n]
held_text = {s["story"].strip() for s in held}
train = [s for s in stories if s["story"].strip() not in held_text]
assert not held_text & seen and not held_text & {s["story"].strip() for s in train}, "a held-out story is in the training text"
for name, part in (("train-json.json", train), ("heldout.json", held)):  # heldout.json last: it marks this step done
  json.dump(part, open(f"{out}/{name}.tmp", "w", encoding="utf-8"))
  os.replace(f"{out}/{name}.tmp", f"{out}/{name}")
print(f"held out {len(held)} stories ({sum(len(s['story']) for s in held):,} chars); training text: 2 .txt files + {len(train)} JSON stories")
PYEOF
fi
TRAIN_DATA=(--data "$SHARED/TinyStories-train-sample.txt" --data "$SHARED/TinyStoriesV2-GPT4-train-sample.txt" --data "$STUDY/train-json.json")
# the held-out text again, against what the runs will train on (a reader of the study can trust the check)
$PY - "$STUDY/heldout.json" "${TRAIN_DATA[1]}" "${TRAIN_DATA[3]}" "${TRAIN_DATA[5]}" <<'PYEOF'
import json, sys
held = {s["story"].strip() for s in json.load(open(sys.argv[1], encoding="utf-8"))}
text = "\n".join(open(f, encoding="utf-8").read() for f in sys.argv[2:4]) + "\n".join(s["story"] for s in json.load(open(sys.argv[4], encoding="utf-8")))
bad = [h for h in held if h in text]
sys.exit(f"{len(bad)} held-out stories occur in the training text" if bad else 0)
PYEOF
[ -f "$STUDY/bpe361.tok" ] || $PY cli.py tokenizer fit "${TRAIN_DATA[@]}" --kind bpe --vocab-size 361 --out "$STUDY/bpe361.tok"
$PY cli.py data prepare "${TRAIN_DATA[@]}" --tokenizer "$STUDY/bpe361.tok" --out "$STUDY/shards"

# the step time, apart from the runs: both recipes train the seed's model on batches of 64 x 128 tokens
if [ ! -f "$STUDY/step_time.json" ]; then
  rm -f "$STUDY/step_times.tmp"
  for round in 1 2 3; do
    $PY -m tinystory.bench --worker train --steps 5 --cfg '{"vocab_size": 361}' | tail -1 >> "$STUDY/step_times.tmp"
  done
  $PY -c "import json, statistics, sys; r = [json.loads(l) for l in open(sys.argv[1])]
json.dump({'step_s': statistics.median(x['train_step_s'] for x in r), 'rounds': r}, open(sys.argv[1] + '.json', 'w'))" "$STUDY/step_times.tmp"
  mv "$STUDY/step_times.tmp.json" "$STUDY/step_time.json"; rm "$STUDY/step_times.tmp"
fi
STEP_S=$($PY -c "import json; print(json.load(open('$STUDY/step_time.json'))['step_s'])")

recipe_value() { $PY -c "import tomllib, sys; r = tomllib.load(open(sys.argv[1], 'rb')); print(r.get(sys.argv[2]) or r.get(sys.argv[3], sys.argv[4]))" "$@"; }
study_recipe() {
  local r=$1 rdir=runs/ttq/$1 max decay prev=0
  max=$(recipe_value recipes/$r.toml max_iters max_iters 100000)
  decay=$(recipe_value recipes/$r.toml lr_decay_iters max_iters 100000)
  for ((m = EVERY; m <= MINUTES; m += EVERY)); do
    k=$($PY -c "print(min($max, round($m * 60 / $STEP_S / 50) * 50))")
    [ "$k" -gt "$prev" ] || continue
    prev=$k
    if ! $PY -c "import json, sys; sys.exit(json.load(open('$rdir/ckpt/ckpt.json'))['iter_num'] < $k)" 2>/dev/null; then
      if [ -d "$rdir/ckpt" ] || [ -d "$rdir/ckpt.prev" ]; then
        $PY cli.py train --out_dir=ttq/$r --init_from=resume --max_iters=$k
      else
        $PY cli.py train recipes/$r.toml --out_dir=ttq/$r --data="$STUDY/shards" --max_iters=$k --lr_decay_iters=$decay \
          --eval_interval=50 --eval_iters=2 --always_save_checkpoint=True --log_interval=10
      fi
    fi
    if [ ! -f "$rdir/heldout-$k.json" ]; then  # the checkpoint scored must be the point's (a rerun may have gone past it)
      at=$($PY -c "import json; print(json.load(open('$rdir/ckpt/ckpt.json'))['iter_num'])")
      [ "$at" = "$k" ] || { echo "$rdir: its checkpoint is at iteration $at, not $k: cannot score the point at $k" >&2; exit 1; }
      $PY cli.py eval --checkpoint="$rdir" --data="$STUDY/heldout.json" --json > "$rdir/heldout.tmp"
      mv "$rdir/heldout.tmp" "$rdir/heldout-$k.json"
    fi
  done
  if [ ! -f "$rdir/sample.txt" ]; then
    $PY cli.py sample --checkpoint="$rdir" --start='Once upon a time' --max_new_tokens=300 --temperature=0.8 --top_k=20 \
      --seed=1 --no-preamble > "$rdir/sample.tmp"
    mv "$rdir/sample.tmp" "$rdir/sample.txt"
  fi
}
if [ -n "${AT_ONCE:-}" ]; then  # all recipes at once, each on one core (TINYSTORY_THREADS=0: the same numbers)
  pids=()
  for r in $RECIPES; do (TINYSTORY_THREADS=0 study_recipe "$r" > "$STUDY/$r.out" 2>&1) & pids+=($!); done
  trap 'kill "${pids[@]}" 2>/dev/null' EXIT  # one failing ends the others too
  for p in "${pids[@]}"; do wait "$p"; done  # each one's failure fails the study
  trap - EXIT
else
  for r in $RECIPES; do study_recipe "$r"; done
fi

$PY docs/studies/time_to_quality.py "$STUDY" $RECIPES > docs/studies/time_to_quality.md
echo "table: docs/studies/time_to_quality.md, figure: docs/studies/time_to_quality.png"
