### Running:

user@host tinystory % python cli.py sample --checkpoint=runs/example --max_new_tokens=400 --temperature=0.8 --top_k=20 --start=''
Overriding: checkpoint = runs/example
Overriding: max_new_tokens = 400
Overriding: temperature = 0.8
Overriding: top_k = 20
Overriding: start = 
ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=4, vocab_size=90, hidden_dim=None, multiple_of=1, norm_eps=1e-05, max_seq_len=64, dropout=0.15)
tok_embeddings.weight [90, 64]
layers.0.attention.wq.weight [64, 64]
layers.0.attention.wk.weight [64, 64]
layers.0.attention.wv.weight [64, 64]
layers.0.attention.wo.weight [64, 64]
layers.0.feed_forward.w1.weight [170, 64]
layers.0.feed_forward.w1.bias [170]
layers.0.feed_forward.w2.weight [64, 170]
layers.0.feed_forward.w3.weight [170, 64]
layers.0.attention_norm.weight [64]
layers.0.ffn_norm.weight [64]
layers.1.attention.wq.weight [64, 64]
layers.1.attention.wk.weight [64, 64]
layers.1.attention.wv.weight [64, 64]
layers.1.attention.wo.weight [64, 64]
layers.1.feed_forward.w1.weight [170, 64]
layers.1.feed_forward.w1.bias [170]
layers.1.feed_forward.w2.weight [64, 170]
layers.1.feed_forward.w3.weight [170, 64]
layers.1.attention_norm.weight [64]
layers.1.ffn_norm.weight [64]
norm.weight [64]
output.weight [90, 64]
Oncile the noy on wels was spot bike and stor the fud at to hat and to there sthe the so fore and.
The was her hed is spate. It thanke and and for lising and. She sop bing to litth could callom. They ould. She saided cait. It smided to bit the beas to to any the the shed her to wer the gooce mo peith and how cank peer it it bethad fitled the was found of a bigh very it lited the poth and hen nound
---------------

### Training:

tinystory % python cli.py train \
  --out_dir=example \
  --data=../shared/data/tinystories/TinyStories-train-sample.txt \
  --dim=64 \
  --n_layers=2 \
  --n_heads=4 \
  --n_kv_heads=4 \
  --batch_size=32 \
  --max_seq_len=64 \
  --max_iters=300 \
  --eval_interval=100 \
  --eval_iters=10 \
  --warmup_iters=50 \
  --learning_rate=2e-3
Overriding: out_dir = example
Overriding: data = ../shared/data/tinystories/TinyStories-train-sample.txt
Overriding: dim = 64
Overriding: n_layers = 2
Overriding: n_heads = 4
Overriding: n_kv_heads = 4
Overriding: batch_size = 32
Overriding: max_seq_len = 64
Overriding: max_iters = 300
Overriding: eval_interval = 100
Overriding: eval_iters = 10
Overriding: warmup_iters = 50
Overriding: learning_rate = 0.002
tokens per iteration will be: 2,048
breaks down as: 1 grad accum steps * 1 processes * 32 batch size * 64 max seq len
using the char tokenizer fitted earlier on this data: data/tok-69550dfaba5e0cd3-char.tok
preparing shards of ../shared/data/tinystories/TinyStories-train-sample.txt with data/tok-69550dfaba5e0cd3-char.tok -> data/shards-69550dfaba5e0cd3-6ec427f54c1c
data/shards-69550dfaba5e0cd3-6ec427f54c1c already holds these shards (same sources, tokenizer and options): reusing them
Initializing a new model from scratch
num decayed parameter tensors: 15, with 103,808 parameters
num non-decayed parameter tensors: 7, with 660 parameters
using fused AdamW: False
Created a PretokDataset with rng seed 42
Created a PretokDataset with rng seed 42
Created a PretokDataset with rng seed 42
step 0: train loss 33.1440, val loss 33.2214
0 | loss 30.7657 | lr 0.000000e+00 | 46469.78ms | mfu -100.00% | 44 tok/s | eta ?
1 | loss 30.4496 | lr 4.000000e-05 | 2603.50ms | mfu -100.00% | 787 tok/s | eta 0:12:58
2 | loss 30.4393 | lr 8.000000e-05 | 129.65ms | mfu -100.00% | 15,797 tok/s | eta 0:11:42
3 | loss 29.1597 | lr 1.200000e-04 | 131.66ms | mfu -100.00% | 15,555 tok/s | eta 0:10:33
4 | loss 27.6473 | lr 1.600000e-04 | 129.00ms | mfu -100.00% | 15,876 tok/s | eta 0:09:32
...
Created a PretokDataset with rng seed 42
Created a PretokDataset with rng seed 42
step 100: train loss 2.3450, val loss 2.3167
saving checkpoint to example
100 | loss 2.3634 | lr 1.809017e-03 | 1461.37ms | mfu 3.04% | 1,401 tok/s | eta 0:00:56
101 | loss 2.5093 | lr 1.801567e-03 | 129.88ms | mfu 3.11% | 15,768 tok/s | eta 0:00:53
102 | loss 2.5064 | lr 1.793990e-03 | 163.33ms | mfu 3.11% | 12,539 tok/s | eta 0:00:51
...
Created a PretokDataset with rng seed 42
Created a PretokDataset with rng seed 42
step 200: train loss 1.9481, val loss 1.9347
saving checkpoint to example
200 | loss 2.0911 | lr 6.909830e-04 | 1458.11ms | mfu 3.35% | 1,405 tok/s | eta 0:00:26
201 | loss 2.1438 | lr 6.790564e-04 | 164.15ms | mfu 3.32% | 12,476 tok/s | eta 0:00:25
202 | loss 2.1017 | lr 6.671805e-04 | 191.33ms | mfu 3.25% | 10,704 tok/s | eta 0:00:24
...
296 | loss 2.0345 | lr 1.263043e-06 | 350.32ms | mfu 1.85% | 5,846 tok/s | eta 0:00:01
297 | loss 1.9834 | lr 7.105274e-07 | 308.32ms | mfu 1.82% | 6,642 tok/s | eta 0:00:00
298 | loss 2.0467 | lr 3.158107e-07 | 275.98ms | mfu 1.82% | 7,421 tok/s | eta 0:00:00
299 | loss 1.9278 | lr 7.895580e-08 | 271.53ms | mfu 1.82% | 7,543 tok/s | eta 0:00:00
Created a PretokDataset with rng seed 42
Created a PretokDataset with rng seed 42
step 300: train loss 1.8665, val loss 1.8466
saving checkpoint to example
300 | loss 2.0558 | lr 0.000000e+00 | 2958.73ms | mfu 1.65% | 692 tok/s | eta 0:00:00


### Run summary (added by `python cli.py export-log`; not output of the commands above)

data           ../shared/data/tinystories/TinyStories-train-sample.txt sha256 009cb2f11b5d2ad64a58562bcc9ad625dfe545c47650343566c8fa1649e3e386
tokenizer      char, 90 tokens, sha256 6ec427f54c1c42f11aaf4f53229e6611fb8a3db8536cd00376ee2b8c133de566
parameters     104,468 (103,808 decayed in 15 tensors + 660 non-decayed in 7 tensors)
iterations     301 (0 to 300), 2,048 tokens each
tokens seen    616,448
wall time      0:01:45 (all invocations, evals included)
best val loss  1.8466 at step 300 (train loss 1.8665)
checkpoint     runs/example/ckpt (step 300)
sample         made by the command above at export time; saved as runs/example/sample.txt
machine        Linux x86_64, 2 cpus; --device=cpu --dtype=float32 --compile=True
versions       tinystory 0.1.0, tinygrad 0.14.0, numpy 2.4.6, python 3.11.7
train loss     █▇▅▃▃▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁  30.7657 -> 2.0558 over 301 iterations
val loss       █▂▁▁  33.2214 -> 1.8466 over 4 evals
loss plot      runs/example/loss.png
