### Running:

user@host tinystory % python cli.py sample --checkpoint=runs/shared-char --max_new_tokens=800 --top_k=200 --temperature=0.8 --start=''
Overriding: checkpoint = runs/shared-char
Overriding: max_new_tokens = 800
Overriding: top_k = 200
Overriding: temperature = 0.8
Overriding: start = 
ModelArgs(dim=128, n_layers=4, n_heads=16, n_kv_heads=16, vocab_size=91, hidden_dim=None, multiple_of=1, norm_eps=1e-05, max_seq_len=128, dropout=0.15)
tok_embeddings.weight [91, 128]
layers.0.attention.wq.weight [128, 128]
layers.0.attention.wk.weight [128, 128]
layers.0.attention.wv.weight [128, 128]
layers.0.attention.wo.weight [128, 128]
layers.0.feed_forward.w1.weight [341, 128]
layers.0.feed_forward.w1.bias [341]
layers.0.feed_forward.w2.weight [128, 341]
layers.0.feed_forward.w3.weight [341, 128]
layers.0.attention_norm.weight [128]
layers.0.ffn_norm.weight [128]
layers.1.attention.wq.weight [128, 128]
layers.1.attention.wk.weight [128, 128]
layers.1.attention.wv.weight [128, 128]
layers.1.attention.wo.weight [128, 128]
layers.1.feed_forward.w1.weight [341, 128]
layers.1.feed_forward.w1.bias [341]
layers.1.feed_forward.w2.weight [128, 341]
layers.1.feed_forward.w3.weight [341, 128]
layers.1.attention_norm.weight [128]
layers.1.ffn_norm.weight [128]
layers.2.attention.wq.weight [128, 128]
layers.2.attention.wk.weight [128, 128]
layers.2.attention.wv.weight [128, 128]
layers.2.attention.wo.weight [128, 128]
layers.2.feed_forward.w1.weight [341, 128]
layers.2.feed_forward.w1.bias [341]
layers.2.feed_forward.w2.weight [128, 341]
layers.2.feed_forward.w3.weight [341, 128]
layers.2.attention_norm.weight [128]
layers.2.ffn_norm.weight [128]
layers.3.attention.wq.weight [128, 128]
layers.3.attention.wk.weight [128, 128]
layers.3.attention.wv.weight [128, 128]
layers.3.attention.wo.weight [128, 128]
layers.3.feed_forward.w1.weight [341, 128]
layers.3.feed_forward.w1.bias [341]
layers.3.feed_forward.w2.weight [128, 341]
layers.3.feed_forward.w3.weight [341, 128]
layers.3.attention_norm.weight [128]
layers.3.ffn_norm.weight [128]
norm.weight [128]
output.weight [91, 128]
Oncim and a bot ton wathe ancit frmit the saut ther. They ared lare tot sabid onne mo he bith they. Time to od it ware fret, The wit, to wo he fid wis. Shel Bery mark fraw to she lew rit ber wip and pomeng the sad she antl morem. The oalle the feaid to the Sand tod say car gor not the plats art peit herey mooke be.

One dow su domel. Thed her her bam mor. Thamed Qimed ther and und toot went thee ha fonce ared to ame same home dar is sa bo the thed " het a bre sand was was tot saw int she thind bied the bot iven dowesca girs anded sas so sme un way, wast them. He nacke the ith o bund ay tore was fing pis tcay, But and. Jo the her maw too lare and a tow thew sthen and on touty lilis and he dard way.
Tim ats he furned the the touth bith bo wich cand to pow he sa way hears int ay the ther a kit
---------------

### Training:

tinystory % python cli.py train \
  --out_dir=shared-char \
  --data=../shared/data/tinystories \
  --tokenizer=char \
  --batch_size=64 \
  --max_seq_len=128 \
  --gradient_accumulation_steps=1 \
  --vocab_source=custom \
  --dim=128 \
  --n_layers=4 \
  --n_heads=16 \
  --n_kv_heads=16 \
  --multiple_of=1 \
  --learning_rate=3e-4 \
  --dropout=0.15 \
  --weight_decay=0.1 \
  --max_iters=400 \
  --beta2=0.99 \
  --warmup_iters=100 \
  --eval_interval=100 \
  --eval_iters=20 \
  --device=cpu
Overriding: out_dir = shared-char
Overriding: data = ../shared/data/tinystories
Overriding: tokenizer = char
Overriding: batch_size = 64
Overriding: max_seq_len = 128
Overriding: gradient_accumulation_steps = 1
Overriding: vocab_source = custom
Overriding: dim = 128
Overriding: n_layers = 4
Overriding: n_heads = 16
Overriding: n_kv_heads = 16
Overriding: multiple_of = 1
Overriding: learning_rate = 0.0003
Overriding: dropout = 0.15
Overriding: weight_decay = 0.1
Overriding: max_iters = 400
Overriding: beta2 = 0.99
Overriding: warmup_iters = 100
Overriding: eval_interval = 100
Overriding: eval_iters = 20
Overriding: device = cpu
tokens per iteration will be: 8,192
breaks down as: 1 grad accum steps * 1 processes * 64 batch size * 128 max seq len
skipping ../shared/data/tinystories/README.md: not a .txt, .json, .jsonl or .tar.gz file
fitting a char tokenizer on ../shared/data/tinystories -> /tmp/tsdata-real/tok-feeb163420b3591a-char.tok
skipping ../shared/data/tinystories/README.md: not a .txt, .json, .jsonl or .tar.gz file
preparing shards of ../shared/data/tinystories with /tmp/tsdata-real/tok-feeb163420b3591a-char.tok -> /tmp/tsdata-real/shards-feeb163420b3591a-2ee74e42d33d
skipping ../shared/data/tinystories/README.md: not a .txt, .json, .jsonl or .tar.gz file
/tmp/tsdata-real/shards-feeb163420b3591a-2ee74e42d33d: 7,043 stories, 5,867,010 tokens in 2 shards; val = shard_0000.bin (141 stories, 115,277 tokens)
Initializing a new model from scratch
num decayed parameter tensors: 29, with 797,568 parameters
num non-decayed parameter tensors: 13, with 2,516 parameters
using fused AdamW: False
Created a PretokDataset with rng seed 42
Created a PretokDataset with rng seed 42
Created a PretokDataset with rng seed 42
step 0: train loss 35.3605, val loss 35.4626
0 | loss 33.9904 | lr 0.000000e+00 | 184629.59ms | mfu -100.00% | 44 tok/s | eta ?
1 | loss 33.9054 | lr 3.000000e-06 | 19863.42ms | mfu -100.00% | 412 tok/s | eta 2:12:05
2 | loss 33.5802 | lr 6.000000e-06 | 10500.80ms | mfu -100.00% | 780 tok/s | eta 2:05:33
3 | loss 33.4353 | lr 9.000000e-06 | 9763.31ms | mfu -100.00% | 839 tok/s | eta 1:59:10
4 | loss 32.4250 | lr 1.200000e-05 | 10133.54ms | mfu -100.00% | 808 tok/s | eta 1:53:40
...
Created a PretokDataset with rng seed 42
Created a PretokDataset with rng seed 42
step 100: train loss 2.6043, val loss 2.6007
saving checkpoint to shared-char
100 | loss 2.8713 | lr 3.000000e-04 | 73352.22ms | mfu 2.99% | 112 tok/s | eta 0:57:37
101 | loss 2.8519 | lr 2.999918e-04 | 4573.23ms | mfu 3.03% | 1,791 tok/s | eta 0:53:57
102 | loss 2.7837 | lr 2.999671e-04 | 4629.87ms | mfu 3.06% | 1,769 tok/s | eta 0:50:42
...
198 | loss 2.3579 | lr 2.277041e-04 | 4558.99ms | mfu 3.10% | 1,797 tok/s | eta 0:16:56
199 | loss 2.3550 | lr 2.263562e-04 | 4620.92ms | mfu 3.12% | 1,773 tok/s | eta 0:16:43
Created a PretokDataset with rng seed 42
Created a PretokDataset with rng seed 42
step 200: train loss 2.2566, val loss 2.2404
saving checkpoint to shared-char
200 | loss 2.3536 | lr 2.250000e-04 | 81004.70ms | mfu 2.83% | 101 tok/s | eta 0:41:58
201 | loss 2.3512 | lr 2.236356e-04 | 4474.54ms | mfu 2.89% | 1,831 tok/s | eta 0:39:04
202 | loss 2.3643 | lr 2.222631e-04 | 4444.92ms | mfu 2.94% | 1,843 tok/s | eta 0:36:27
saving checkpoint to shared-char
interrupted: saved step 203 to /work/main/runs/shared-char/ckpt; continue with --init_from=resume --out_dir=shared-char
tinystory % python cli.py train \
  --out_dir=shared-char \
  --init_from=resume \
  --data=../shared/data/tinystories \
  --tokenizer=char \
  --batch_size=64 \
  --max_seq_len=128 \
  --gradient_accumulation_steps=1 \
  --vocab_source=custom \
  --dim=128 \
  --n_layers=4 \
  --n_heads=16 \
  --n_kv_heads=16 \
  --multiple_of=1 \
  --learning_rate=3e-4 \
  --dropout=0.15 \
  --weight_decay=0.1 \
  --max_iters=400 \
  --beta2=0.99 \
  --warmup_iters=100 \
  --eval_interval=100 \
  --eval_iters=20 \
  --device=cpu
Overriding: out_dir = shared-char
Overriding: init_from = resume
Overriding: data = ../shared/data/tinystories
Overriding: tokenizer = char
Overriding: batch_size = 64
Overriding: max_seq_len = 128
Overriding: gradient_accumulation_steps = 1
Overriding: vocab_source = custom
Overriding: dim = 128
Overriding: n_layers = 4
Overriding: n_heads = 16
Overriding: n_kv_heads = 16
Overriding: multiple_of = 1
Overriding: learning_rate = 0.0003
Overriding: dropout = 0.15
Overriding: weight_decay = 0.1
Overriding: max_iters = 400
Overriding: beta2 = 0.99
Overriding: warmup_iters = 100
Overriding: eval_interval = 100
Overriding: eval_iters = 20
Overriding: device = cpu
tokens per iteration will be: 8,192
breaks down as: 1 grad accum steps * 1 processes * 64 batch size * 128 max seq len
Resuming training from shared-char
num decayed parameter tensors: 29, with 797,568 parameters
num non-decayed parameter tensors: 13, with 2,516 parameters
using fused AdamW: False
Created a PretokDataset with rng seed 42
203 | loss 2.3813 | lr 2.208826e-04 | 30747.71ms | mfu -100.00% | 266 tok/s | eta ?
204 | loss 2.3431 | lr 2.194944e-04 | 12640.40ms | mfu -100.00% | 648 tok/s | eta 0:41:17
205 | loss 2.3474 | lr 2.180986e-04 | 5212.49ms | mfu -100.00% | 1,572 tok/s | eta 0:38:40
206 | loss 2.3322 | lr 2.166953e-04 | 8240.27ms | mfu -100.00% | 994 tok/s | eta 0:37:17
207 | loss 2.3278 | lr 2.152847e-04 | 5134.50ms | mfu -100.00% | 1,595 tok/s | eta 0:35:02
...
Created a PretokDataset with rng seed 42
Created a PretokDataset with rng seed 42
step 300: train loss 2.0390, val loss 2.0187
saving checkpoint to shared-char
300 | loss 2.1512 | lr 7.500000e-05 | 81115.65ms | mfu 2.81% | 101 tok/s | eta 0:20:59
301 | loss 2.1676 | lr 7.364379e-05 | 4729.99ms | mfu 2.86% | 1,732 tok/s | eta 0:19:29
302 | loss 2.1482 | lr 7.229595e-05 | 4713.45ms | mfu 2.89% | 1,738 tok/s | eta 0:18:08
...
396 | loss 2.0902 | lr 1.315755e-07 | 4682.90ms | mfu 3.12% | 1,749 tok/s | eta 0:00:19
397 | loss 2.0621 | lr 7.401595e-08 | 4832.69ms | mfu 3.12% | 1,695 tok/s | eta 0:00:14
398 | loss 2.0877 | lr 3.289748e-08 | 4655.54ms | mfu 3.14% | 1,760 tok/s | eta 0:00:09
399 | loss 2.0730 | lr 8.224595e-09 | 4734.50ms | mfu 3.15% | 1,730 tok/s | eta 0:00:04
Created a PretokDataset with rng seed 42
Created a PretokDataset with rng seed 42
step 400: train loss 1.9844, val loss 1.9615
saving checkpoint to shared-char
400 | loss 2.0845 | lr 0.000000e+00 | 80728.38ms | mfu 2.85% | 101 tok/s | eta 0:00:00


### Run summary (added by `python cli.py export-log`; not output of the commands above)

data           ../shared/data/tinystories/TinyStories-shard-sample.json sha256 3dd04f6ba104bb39df311d86a803f60d31408ba6bcfe7187c2049d9611ee0a3e
data           ../shared/data/tinystories/TinyStories-train-sample.txt sha256 009cb2f11b5d2ad64a58562bcc9ad625dfe545c47650343566c8fa1649e3e386
data           ../shared/data/tinystories/TinyStoriesV2-GPT4-train-sample.txt sha256 c86c6476d5d85bb2ef3f414d7fda7c464ebc106be205d4efddfd94403b970171
tokenizer      char, 91 tokens, sha256 2ee74e42d33d604b1f5d238d9897942b78f816eb70ac8caf7b0ade17878afd27
parameters     800,084 (797,568 decayed in 29 tensors + 2,516 non-decayed in 13 tensors)
iterations     401 (0 to 400), 8,192 tokens each
tokens seen    3,284,992
wall time      0:51:31 (all invocations, evals included)
best val loss  1.9615 at step 400 (train loss 1.9844)
checkpoint     runs/shared-char/ckpt (step 400)
sample         made by the command above at export time; saved as runs/shared-char/sample.txt
machine        Linux x86_64, 2 cpus; --device=cpu --dtype=float32 --compile=True
versions       tinystory 0.1.0, tinygrad 0.14.0, numpy 2.4.6, python 3.11.7
train loss     █▇▆▅▄▃▃▃▂▂▂▂▂▂▂▂▂▂▂▂▂▂▂▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁  33.9904 -> 2.0845 over 401 iterations
val loss       █▂▁▁▁  35.4626 -> 1.9615 over 5 evals
loss plot      runs/shared-char/loss.png
