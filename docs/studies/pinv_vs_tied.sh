#!/usr/bin/env bash
# The study behind docs/pinv.md, "Does it help?": the seed model with its pseudo-inverse unembedding against llama2.c's
# tied one and a separate (untied) output matrix, on a character vocabulary and on BPE-361, two seeds each, the same
# number of iterations for all. Runs go to runs/study/ (out of git); the table and figure go to docs/.
#
#   bash docs/studies/pinv_vs_tied.sh           # everything; a second call skips finished runs and resumes cut ones
#   ITERS=1200 bash docs/studies/pinv_vs_tied.sh
#
# Beyond the seed, on the character vocabulary only (BEYOND, vocab:variant pairs): pinv_scaled, pinv's logits times a
# learned scale that starts at tied's logit scale (pinv's first logits are hundreds of times larger).
#
# Data: the two .txt samples in $SHARED are trained on (their first 2% of stories are the val split of the training
# log); the held-out part is the first $HELDOUT stories of TinyStories-shard-sample.json that are not in the training
# text, never trained on and never seen by the tokenizer fits. It is scored with `cli.py eval` (bits per character
# compare the two vocabularies).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared/data/tinystories}
STUDY=runs/study
ITERS=${ITERS:-600}
SEEDS=${SEEDS:-"1337 2024"}
VOCABS=${VOCABS:-"char bpe361"}
VARIANTS=${VARIANTS:-"pinv tied untied"}
BEYOND=${BEYOND-"char:pinv_scaled"}
HELDOUT=${HELDOUT:-400}
TRAIN_FILES=("$SHARED/TinyStories-train-sample.txt" "$SHARED/TinyStoriesV2-GPT4-train-sample.txt")
FIT_DATA=(--data "${TRAIN_FILES[0]}" --data "${TRAIN_FILES[1]}")

mkdir -p "$STUDY"
[ -f "$STUDY/char.tok" ] || $PY cli.py tokenizer fit "${FIT_DATA[@]}" --kind char --out "$STUDY/char.tok"
[ -f "$STUDY/bpe361.tok" ] || $PY cli.py tokenizer fit "${FIT_DATA[@]}" --kind bpe --vocab-size 361 --out "$STUDY/bpe361.tok"
for v in $VOCABS; do
  $PY cli.py data prepare "${FIT_DATA[@]}" --tokenizer "$STUDY/$v.tok" --out "$STUDY/shards-$v"
done
# held out: the first $HELDOUT stories of the JSON sample that do not occur in the training text (a few do)
[ -f "$STUDY/heldout.json" ] || $PY - "$SHARED/TinyStories-shard-sample.json" "$HELDOUT" "$STUDY/heldout.json" "${TRAIN_FILES[@]}" <<'PYEOF'
import json, os, sys
src, n, out, train = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
seen = {s.strip() for f in train for s in open(f, encoding="utf-8").read().split("<|endoftext|>")}
stories = [s for s in json.load(open(src, encoding="utf-8")) if s["story"].strip() not in seen][:n]
json.dump(stories, open(out + ".tmp", "w", encoding="utf-8"))
os.replace(out + ".tmp", out)
PYEOF

# vocabulary-major order: an interrupted study has both seeds of the character vocabulary first
for v in $VOCABS; do for seed in $SEEDS; do for u in $VARIANTS $(for b in $BEYOND; do [ "${b%%:*}" = "$v" ] && echo "${b#*:}"; done); do
  name="study/$v-$u-s$seed"; rdir="runs/$name"
  if ! $PY -c "import json, sys; sys.exit(json.load(open('$rdir/ckpt/ckpt.json'))['iter_num'] < $ITERS)" 2>/dev/null; then
    init=scratch; [ -d "$rdir/ckpt" ] && init=resume
    # the seed config (dim 128, 4 layers, 16 heads, dropout 0.15, lr 3e-4, weight decay 0.1, batch 64 x 128) is train's
    # default; only the schedule is scaled to the study's length: 10% warmup, cosine to lr/10 at the last iteration
    $PY cli.py train --out_dir="$name" --init_from=$init --data="$STUDY/shards-$v" --tokenizer="$STUDY/$v.tok" \
      --unembedding=$u --seed=$seed --max_iters=$ITERS --warmup_iters=$((ITERS / 10)) --lr_decay_iters=$ITERS \
      --min_lr=3e-5 --eval_interval=$((ITERS / 6)) --eval_iters=10 --always_save_checkpoint=True --log_interval=10
  fi
  [ -f "$rdir/heldout.json" ] || { $PY cli.py eval --checkpoint="$rdir" --data="$STUDY/heldout.json" --json \
    > "$rdir/heldout.json.tmp" && mv "$rdir/heldout.json.tmp" "$rdir/heldout.json"; }
  [ -f "$rdir/sample.txt" ] || { $PY cli.py sample --checkpoint="$rdir" --start='Once upon a time' --max_new_tokens=300 \
    --temperature=0.8 --top_k=20 --seed=1 --no-preamble > "$rdir/sample.txt.tmp" && mv "$rdir/sample.txt.tmp" "$rdir/sample.txt"; }
done; done; done

# the cost of each unembedding, apart from the runs (their wall time also holds evals and whatever else the machine
# did): bench's training-step worker on random tokens, seed config at each vocabulary's size, 3 alternating rounds
if [ ! -f "$STUDY/step_times.jsonl" ]; then
  rm -f "$STUDY/step_times.jsonl.tmp"
  for round in 1 2 3; do for v in $VOCABS; do for u in $VARIANTS; do
    V=$($PY -c "from tinystory.tokenizer import load_tokenizer; print(load_tokenizer('$STUDY/$v.tok').vocab_size)")
    t=$($PY -m tinystory.bench --worker train --steps 5 --cfg "{\"unembedding\": \"$u\", \"vocab_size\": $V}" | tail -1)
    echo "{\"vocab\": \"$v\", \"unembedding\": \"$u\", \"round\": $round, \"step\": $t}" >> "$STUDY/step_times.jsonl.tmp"
  done; done; done
  mv "$STUDY/step_times.jsonl.tmp" "$STUDY/step_times.jsonl"
fi

$PY docs/studies/pinv_table.py "$STUDY" > docs/studies/pinv_table.md
for v in $VOCABS; do $PY cli.py plot "$STUDY"/$v-*-s* --x=tokens --out docs/studies/pinv_loss_$v.png; done
echo "table: docs/studies/pinv_table.md, figures: docs/studies/pinv_loss_*.png"
