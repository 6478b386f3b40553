"""Training: llama2.c's train.py loop in tinygrad, with exact resume and a complete run record.

A run lives in one directory (`./runs/<out_dir>`, see checkpoint.run_dir): train.log (everything printed, verbatim),
metrics.jsonl (one JSON object per iteration and per eval), config.json (resolved options, parameter counts, data,
tokenizer, versions, command lines), tokenizer.tok (a copy) and ckpt/ (the checkpoint, written by checkpoint.py).
"""
import contextlib, dataclasses, json, math, os, platform, shlex, shutil, signal, sys, time
from dataclasses import dataclass
from pathlib import Path
import numpy as np
from tinystory import (SEED_MODEL, __version__, create_dirs, need, need_positive, option, remove_created, UserError,
                       write_atomic)
from tinystory.checkpoint import (CKPT, GOOD, check_field, find_checkpoint, load_checkpoint, model_args_of, model_weights, run_dir,
                                  training_lock)
from tinystory import kernel_opts
from tinystory.device import choose_for, devices_of, rng_state, set_device, set_rng_state
from tinystory.optim import AdamW, get_lr, weight_decays
from tinystory.rundir import RunRecord
from tinystory.recipe import describe as describe_recipe
from tinystory.log import fmt_duration, log, log_only_to, log_to_file, log_to_pending, stop_logging_to

@dataclass
class TrainConfig:
  """llama2.c's train.py options, its names and order, with the seed run's values as defaults; `--help` shows each
  field's help."""
  # I/O
  out_dir: str = option("out", "run directory (train.log, metrics.jsonl, config.json, tokenizer.tok, ckpt/), relative "
                        "to ./runs of the working directory unless absolute")
  eval_interval: int = option(5000, "evaluate (and checkpoint if the val loss improved) every this many iterations")
  log_interval: int = option(1, "print an iteration line every this many iterations")
  eval_iters: int = option(100, "batches of each split averaged for an eval's train and val loss")
  eval_only: bool = option(False, "exit right after the first eval")
  always_save_checkpoint: bool = option(False, "save a checkpoint at every eval, not only when the val loss improves")
  init_from: str = option("scratch", "'scratch': a new model; 'resume': continue <out_dir>/ckpt exactly (weights, "
                          "optimizer state, data position, RNG) with the run's saved options; options typed now change "
                          "them (logged as 'changed on resume'), except those that fix the model shape (dim, n_layers, "
                          "n_heads, n_kv_heads, multiple_of, vocab_size, ffn_bias, unembedding, max_seq_len), its data "
                          "(data, tokenizer, vocab_source) or its RNG (seed): other values of those are refused. A "
                          "model file (a llama2.c .bin or a Hugging Face directory, docs/exchange.md): a new run from "
                          "its shape and weights, and unless given its context length (a shorter --max_seq_len may be given) "
                          "and its own tokenizer (tokenizer.bin beside a .bin, an HF directory's tokenizer.json)")
  overwrite: bool = option(False, "a new run (not --init_from=resume) in a run dir that holds a checkpoint: delete that "
                           "run (checkpoint, train.log, metrics.jsonl, config.json) once every check has passed")
  # wandb logging (llama2.c's)
  wandb_log: bool = option(False, "log llama2.c's series (iter, tokens, loss/train, loss/val, lr, mfu) to Weights & "
                           "Biases at each eval; needs the wandb package (pip install wandb); WANDB_MODE=offline works "
                           "without a network")
  wandb_project: str = option("llamac", "the wandb project")
  wandb_run_name: str = option("", "the wandb run name; '': 'run' + the start time, as llama2.c")
  # data
  data: str = option("synthetic", "prepared shard dir, or raw sources (files, dirs, globs, 'synthetic'), comma-separated")
  tokenizer: str = option("char", "tokenizer file (.tok, llama2.c tokenizer.bin, exported tokenizer.json), or "
                          "'char'/'bpe' to fit one on --data on the fly; with --init_from=MODEL: the model's own")
  val_data: str = option("", "held-out text for the val loss, all of it (e.g. TinyStories-valid.txt): raw sources, "
                         "prepared with the run's tokenizer, or a prepared shard dir; '': --data's val shard. A resume "
                         "keeps the run's unless given")
  batch_size: int = option(64, "sequences per micro-batch (an iteration is gradient_accumulation_steps micro-batches)")
  max_seq_len: int = option(SEED_MODEL["max_seq_len"], "tokens per sequence: the model's context length")
  vocab_source: str = option("custom", "only 'custom' is accepted: a tokenizer fitted here (llama2.c's 'llama2', "
                             "Meta's tokenizer, cannot be downloaded by this project)")
  vocab_size: int = option(0, "0: the tokenizer's size; otherwise it must agree with the tokenizer (--tokenizer=bpe "
                           "fits one of this size)")
  # model (the seed's; ModelArgs names)
  dim: int = option(SEED_MODEL["dim"], "model width: the embedding and residual stream size")
  n_layers: int = option(SEED_MODEL["n_layers"], "transformer blocks")
  n_heads: int = option(SEED_MODEL["n_heads"], "attention heads; dim/n_heads (the head size) must be even, for RoPE")
  n_kv_heads: int = option(SEED_MODEL["n_kv_heads"], "key/value heads (grouped-query attention when fewer than "
                           "n_heads); n_heads must be a multiple of it")
  multiple_of: int = option(SEED_MODEL["multiple_of"], "the FFN hidden size, 2/3 of 4*dim, is rounded up to a multiple "
                            "of this")
  dropout: float = option(SEED_MODEL["dropout"], "dropout probability (embeddings, attention, residual branches), in "
                          "training only")
  ffn_bias: bool = option(SEED_MODEL["ffn_bias"], "a bias on the SwiGLU gate w1 (the seed's; stock llama2.c has none)")
  unembedding: str = option(SEED_MODEL["unembedding"], "pinv (the seed: logits = h @ pinv(E)) | tied (stock llama2.c) | "
                            "untied | pinv_scaled (beyond the seed: pinv's logits times a learned scale, starting at "
                            "tied's logit scale)")
  # adamw optimizer
  gradient_accumulation_steps: int = option(1, "micro-batches whose mean gradient makes one optimizer step")
  learning_rate: float = option(3e-4, "peak learning rate, reached after warmup_iters")
  max_iters: int = option(100000, "the last iteration (iterations run from 0 to max_iters, as llama2.c)")
  weight_decay: float = option(0.1, "AdamW weight decay of the 2+-dim tensors (not of biases and norm weights)")
  beta1: float = option(0.9, "AdamW's decay of the gradient's running mean")
  beta2: float = option(0.99, "AdamW's decay of the squared gradient's running mean")
  grad_clip: float = option(1.0, "clip gradients at this global norm; 0 disables")
  # learning rate schedule
  decay_lr: bool = option(True, "linear warmup, then cosine decay to min_lr (False: learning_rate throughout)")
  warmup_iters: int = option(2500, "iterations of linear warmup from 0 to learning_rate")
  lr_decay_iters: int = option(0, "iteration at which the cosine decay reaches min_lr; 0: max_iters")
  min_lr: float = option(0.0, "learning rate at the end of the decay and after it")
  # system
  device: str = option("cpu", "cpu, or a tinygrad device: cuda, metal, amd; several, comma-separated (cuda:0,cuda:1): "
                       "data parallel, each micro-batch split between them (docs/devices.md)")
  dtype: str = option("float32", "float32 | bfloat16 | float16: as llama2.c, the CPU trains in float32 whatever it "
                      "says; other devices take float32 only, for now")
  compile: bool = option(True, "TinyJit-compiled steps (False runs eagerly: same numbers, slower)")
  seed: int = option(1337, "seed of the model's init and of the dropout masks (a resume restores the checkpoint's RNG)")
  peak_flops: float = option(0.0, "peak FLOP/s for mfu; 0: 3e11 on cpu, 312e12 (A100 bf16, as llama2.c) elsewhere")

# options a resume cannot change: they fix the model's shape, its data and tokenizer, and its random streams (whose
# state the checkpoint restores); and this invocation's own, never taken from the saved ones
RESUME_FIXED = ("dim", "n_layers", "n_heads", "n_kv_heads", "multiple_of", "vocab_size", "ffn_bias", "unembedding",
                "max_seq_len", "data", "tokenizer", "vocab_source", "seed")
NOT_RESUMED = ("init_from", "out_dir", "overwrite")
RUN_FILES = ("train.log", "metrics.jsonl", "config.json", "tokenizer.tok", "sample.txt")  # what --overwrite deletes, with ckpt*

def validate(cfg: TrainConfig) -> None:
  from tinystory.loader import is_model_file
  need_positive(cfg, "eval_interval", "log_interval", "eval_iters", "batch_size", "max_seq_len", "gradient_accumulation_steps")
  for k in ("max_iters", "warmup_iters", "lr_decay_iters", "vocab_size"):
    need(getattr(cfg, k) >= 0, f"--{k} must be >= 0, got {getattr(cfg, k)}")
  for k in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
    need(getattr(cfg, k) >= 0 and math.isfinite(getattr(cfg, k)), f"--{k} must be a finite number >= 0, got {getattr(cfg, k)}")
  for k in ("beta1", "beta2"): need(0 <= getattr(cfg, k) < 1, f"--{k} must be in [0, 1), got {getattr(cfg, k)}")
  need(cfg.init_from in ("scratch", "resume") or is_model_file(cfg.init_from), f"--init_from must be 'scratch', 'resume' or "
       f"a model file (a llama2.c .bin or a Hugging Face directory, docs/exchange.md), got {cfg.init_from!r}")
  need(not (cfg.overwrite and cfg.init_from == "resume"), "--overwrite=True starts a new run: it does not go with --init_from=resume")
  need(cfg.vocab_source == "custom", f"--vocab_source={cfg.vocab_source!r} is not available: only 'custom' (a tokenizer "
       "fitted with `tokenizer fit` or on the fly); Meta's Llama 2 tokenizer cannot be downloaded by this project")
  need(cfg.dtype in ("float32", "bfloat16", "float16"), f"--dtype must be float32, bfloat16 or float16, got {cfg.dtype!r}")
  devices = len(cfg.device.split(","))
  need(cfg.batch_size % devices == 0, f"--batch_size={cfg.batch_size} must be a multiple of the {devices} devices of "
       f"--device={cfg.device}: each gets an equal shard of every micro-batch")
  need(cfg.min_lr <= cfg.learning_rate, f"--min_lr ({cfg.min_lr}) must not exceed --learning_rate ({cfg.learning_rate})")

# *** data and tokenizer ***

def resolve_data(cfg: TrainConfig) -> tuple[Path, Path]:
  """(shard dir, tokenizer file) for --data/--tokenizer: prepared shards are used as they are; raw sources get a
  tokenizer fitted (unless a file is given) and shards prepared, in a cache keyed by content (see data.cache_dir)."""
  from tinystory import data, pretok
  from tinystory.tokenizer import fit_tokenizer
  sources = data.source_list(cfg.data)
  if shard_dir := pretok.prepared_dir(sources):
    meta = pretok.load_meta(shard_dir)
    tok_path = Path(cfg.tokenizer) if cfg.tokenizer not in ("char", "bpe") else Path(meta["tokenizer_path"])
    if cfg.tokenizer in ("char", "bpe") and not tok_path.is_file():  # moved or deleted since: say who named it
      raise UserError(f"tokenizer {tok_path} (named by {shard_dir / 'meta.json'} as the one the shards were made with) "
                      f"does not exist: pass --tokenizer")
    pretok.check_tokenizer_matches(meta, check_vocab_size(cfg, tok_path))
    return shard_dir, tok_path
  key = data.sources_key(sources)
  if cfg.tokenizer in ("char", "bpe"):
    tok_path = data.cache_dir() / f"tok-{key[:16]}-{cfg.tokenizer}{cfg.vocab_size or ''}.tok"
    if tok_path.is_file(): log(f"using the {cfg.tokenizer} tokenizer fitted earlier on this data: {tok_path}")
    else:
      if cfg.tokenizer == "bpe" and not cfg.vocab_size:
        raise UserError("--tokenizer=bpe fits a BPE on the fly and needs --vocab_size (e.g. --vocab_size=361)")
      log(f"fitting a {cfg.tokenizer} tokenizer on {cfg.data} -> {tok_path}")
      fit_tokenizer(data.iter_stories(sources), cfg.tokenizer, cfg.vocab_size or None).save(tok_path)
  else:
    tok_path = Path(cfg.tokenizer)
  return prepare_cached(sources, tok_path, check_vocab_size(cfg, tok_path), key), tok_path

def prepare_cached(sources: list[str], tok_path: Path, tok, key: str | None = None) -> Path:
  """The shards of raw `sources` with the tokenizer, prepared once into the cache (key: data.sources_key)."""
  from tinystory import data, pretok
  shard_dir = data.cache_dir() / f"shards-{(key or data.sources_key(sources))[:16]}-{tok.sha256[:12]}"
  log(f"preparing shards of {','.join(sources)} with {tok_path} -> {shard_dir}")
  pretok.prepare(sources, tok_path, shard_dir)
  return shard_dir

def resolve_val_data(val_data: str, tok_path: Path) -> Path | None:
  """The shard dir of --val_data (None when not given): a prepared one as it is, raw sources prepared with the run's
  tokenizer into the cache. Every shard of it is val data."""
  from tinystory import data, pretok
  from tinystory.loader import load_tokenizer
  if not (sources := data.source_list(val_data)): return None
  tok = load_tokenizer(tok_path)
  if shard_dir := pretok.prepared_dir(sources):
    pretok.check_tokenizer_matches(pretok.load_meta(shard_dir), tok)
    return shard_dir
  return prepare_cached(sources, tok_path, tok)

def import_wandb():
  """The wandb module for --wandb_log, or a one-line error saying how to install it."""
  try: import wandb
  except ImportError: raise UserError("--wandb_log=True needs the wandb package: pip install wandb (or pip install -e '.[wandb]')") from None
  return wandb

def check_vocab_size(cfg: TrainConfig, tok_path: Path):
  from tinystory.loader import load_tokenizer
  tok = load_tokenizer(tok_path)
  if cfg.vocab_size and cfg.vocab_size != tok.vocab_size:
    raise UserError(f"--vocab_size={cfg.vocab_size} disagrees with the tokenizer {tok_path}, which has "
                    f"{tok.vocab_size} tokens: drop --vocab_size or pass a tokenizer of that size")
  return tok

# *** one training iteration: compiled steps and the optimizer state they update ***

class TrainSteps:
  """micro_step (forward + backward of one micro-batch, accumulating gradients), update (clip + AdamW: `opt`) and
  eval_loss, each compiled when cfg.compile (replay.ReplayJit: TinyJit, then its kernels replayed on every core). Their
  inputs are fixed tensors that each call uploads the new batch (or lr and step) into."""
  def __init__(self, model, cfg: TrainConfig):
    from tinygrad import Tensor, dtypes
    from tinygrad.helpers import LRU
    from tinystory.replay import ReplayJit
    kernel_opts.install()  # the searched opts for the step's slowest CPU kernels (the seed config's)
    # tinygrad's allocator keeps freed buffers for reuse; the first (eager) step and the JIT capture free a whole step's
    # worth of them, which would then sit in that cache for good: off, the seed config peaks at 1.8 GB, not 2.8
    LRU.value = 0
    self.model, self.cfg, self.params = model, cfg, model.parameters()
    self.opt = AdamW(self.params, weight_decays(self.params, cfg.weight_decay), cfg.beta1, cfg.beta2, cfg.grad_clip)
    # on several devices (model.shard) the gradients are replicated like the weights and each batch is split
    devices = model.weights["norm.weight"].device
    on = (lambda t, axis=None: t.shard(devices, axis)) if isinstance(devices, tuple) else (lambda t, axis=None: t)
    zeros = lambda *shape, dtype=dtypes.float32, axis=None: on(Tensor.zeros(*shape, dtype=dtype), axis).contiguous().realize()
    self.grad_acc = [zeros(*p.shape) for p in self.params]
    self.batch = tuple(zeros(cfg.batch_size, cfg.max_seq_len, dtype=dtypes.int64, axis=0) for _ in ("x", "y"))
    self.lr_step = (zeros(1), zeros(1))
    self._micro = ReplayJit(self._micro_step, self.batch, compile=cfg.compile)
    self._eval = ReplayJit(self._eval_loss, self.batch, compile=cfg.compile)
    self._update = ReplayJit(self._update_step, self.lr_step, compile=cfg.compile)

  def _micro_step(self, x, y):
    from tinygrad import Tensor, Context
    with Context(TRAINING=1):
      loss = self.model(x).sparse_categorical_crossentropy(y)
      grads = loss.gradient(*self.params)
    n = self.cfg.gradient_accumulation_steps
    Tensor.realize(loss, *[a.assign(a + g / n) for a, g in zip(self.grad_acc, grads)])
    return loss

  def _update_step(self, lr, step):
    from tinygrad import Tensor
    Tensor.realize(*self.opt.update(self.grad_acc, lr, step), *[a.assign(a.zeros_like()) for a in self.grad_acc])
    return lr

  def _eval_loss(self, x, y): return self.model(x).sparse_categorical_crossentropy(y).realize()

  @staticmethod
  def upload(tensors: tuple, *arrays: np.ndarray) -> None:
    from tinystory.replay import host_view, upload
    for t, arr in zip(tensors, arrays, strict=True): upload(t, host_view(t), arr)

  def micro_step(self, x: np.ndarray, y: np.ndarray, profile: list | None = None):
    """Forward and backward on the token ids x and targets y, (batch_size, max_seq_len): returns the loss tensor.
    `profile`: see replay.ReplayJit."""
    self.upload(self.batch, x, y)
    return self._micro(profile)

  def eval_loss(self, x: np.ndarray, y: np.ndarray):
    self.upload(self.batch, x, y)
    return self._eval()

  def update(self, lr: float, profile: list | None = None) -> None:
    self.opt.step += 1
    self.upload(self.lr_step, np.array([lr], np.float32), np.array([self.opt.step], np.float32))
    self._update(profile)

# *** the run ***

def flops_per_token(model) -> float:
  """llama2.c's estimate (PaLM appendix B) of a training step's arithmetic: 6N + 12 L H Q T flops per token."""
  a = model.args
  return 6 * sum(n for _, n in model.num_params()) + 12 * a.n_layers * a.n_heads * a.head_dim * a.max_seq_len

def estimate_mfu(model, tokens_per_iter: int, dt: float, peak_flops: float) -> float:
  """llama2.c's model flops utilisation: flops_per_token * tokens_per_iter per dt, against peak_flops."""
  return flops_per_token(model) * tokens_per_iter / dt / peak_flops

def checkpoint_run(run: RunRecord, model, steps: TrainSteps, train_batches, device, meta: dict, val_loss: float) -> None:
  """Checkpoint the run: the weights, the optimizer state and the positions of the data and of the dropout RNG."""
  run.save(model_weights(model), steps.opt.state_dict(model.shapes), {**meta, "opt_step": steps.opt.step,
           "data_state": train_batches.state(), "rng_state": rng_state(device)}, val_loss)

def estimate_loss(steps: TrainSteps, batches, eval_iters: int) -> float:
  """llama2.c's estimate_loss for one split: the mean loss of eval_iters batches of it."""
  return float(np.mean([steps.eval_loss(*batches.next_batch()).item() for _ in range(eval_iters)]))

class Interrupted:
  """SIGINT (Ctrl-C) or SIGTERM (kill, timeout, systemd, job schedulers) sets a flag that the loop checks between
  steps (so a step is never cut in half): it saves and stops. A second signal aborts at once. `signum` is the first
  signal's number (0: none)."""
  SIGNALS = (signal.SIGINT, signal.SIGTERM)
  def __init__(self): self.flag, self.signum = False, 0
  def __enter__(self):
    self.prev = [signal.signal(s, self.handle) for s in self.SIGNALS]
    return self
  def handle(self, signum, _frame):
    if self.flag: raise KeyboardInterrupt
    self.flag, self.signum = True, signum
  def __exit__(self, *_):
    for s, prev in zip(self.SIGNALS, self.prev): signal.signal(s, prev)


# *** resume ***

@dataclass
class Resume:
  meta: dict                      # ckpt.json
  weights: dict[str, np.ndarray]
  opt: dict[str, np.ndarray]
  options: dict                   # the options the checkpoint was trained with
  restored: Path | None           # ckpt.prev (or ckpt.good) was all there was, and was renamed back to ckpt

def load_resume(rdir: Path) -> Resume:
  """The checkpoint to resume and the options it was trained with, every field the trainer reads checked (one-line
  errors). A checkpoint left only as ckpt.prev (a save that died between its two renames) becomes ckpt again."""
  from tinystory.model import param_shapes
  ck, restored = find_checkpoint(rdir), None
  if ck.name != CKPT and ck.parent == rdir:
    try: os.replace(ck, rdir / CKPT)
    except OSError as e: raise UserError(f"cannot restore {ck} as {rdir / CKPT}: {e.strerror or e}") from None
    ck, restored = rdir / CKPT, ck
  meta, weights, opt = load_checkpoint(ck, optimizer=True)
  args = model_args_of(ck, meta, weights)
  for key, kind in (("opt_step", int), ("shard_dir", str), ("data_state", dict), ("rng_state", dict)):
    if key not in meta: raise UserError(f"checkpoint {ck / 'ckpt.json'} lacks {key!r}: it cannot be resumed (it can be sampled)")
    check_field(meta, key, kind, ck)
  rng, u32 = meta["rng_state"], lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 32
  counter = lambda c: c is None or isinstance(c, list) and len(c) == 2 and all(map(u32, c))
  more = rng.get("more_counters", [])
  if not (u32(rng.get("seed")) and counter(rng.get("counter")) and isinstance(more, list) and all(map(counter, more))):
    raise UserError(f"checkpoint {ck / 'ckpt.json'}: rng_state {json.dumps(rng)[:60]} is not a seed and a counter of two uint32")
  for n, shape in param_shapes(args, args.vocab_size, args.hidden_size).items():
    for key in ("exp_avg." + n, "exp_avg_sq." + n):
      if key not in opt or opt[key].shape != shape:
        raise UserError(f"checkpoint {ck / 'optimizer.safetensors'}: {key} is missing or not of shape {list(shape)}")
  return Resume(meta, weights, opt, saved_options(ck, meta, rdir), restored)

def saved_options(ck: Path, meta: dict, rdir: Path) -> dict:
  """The TrainConfig fields the checkpoint was trained with (ckpt.json's config, else config.json's options), each
  checked to have its field's type; fields this version does not know are ignored, ones it lacks keep their defaults."""
  where, opts = ck / "ckpt.json", meta.get("config")
  if opts is None:
    where = rdir / "config.json"
    try: opts = json.loads(where.read_text()).get("options")
    except (OSError, ValueError, AttributeError): opts = None
  if not isinstance(opts, dict): raise UserError(f"checkpoint {ck / 'ckpt.json'} has no 'config' (and {where} no options): cannot resume")
  out = {}
  for f in dataclasses.fields(TrainConfig):
    if f.name not in opts or f.name in NOT_RESUMED: continue
    v, kind = opts[f.name], type(f.default)
    if isinstance(v, bool) != (kind is bool) or not isinstance(v, (int, float) if kind is float else kind):
      raise UserError(f"{where}: option {f.name}={json.dumps(v)[:40]} is not a {kind.__name__}")
    out[f.name] = float(v) if kind is float else v
  return out

def resumed_config(cfg: TrainConfig, resume: Resume, overrides) -> tuple[TrainConfig, list[tuple[str, object, object]]]:
  """The run's saved options with the ones given on the command line (`overrides`) on top, and the changes as
  (name, saved, given). The shape of the model comes from the checkpoint: RESUME_FIXED options that differ are refused."""
  # the model's shape as the checkpoint has it; max_seq_len as trained (a model file's own may be longer)
  was = {**resume.options, **{k: v for k, v in resume.meta["model_args"].items() if k in RESUME_FIXED and k != "max_seq_len"}}
  # a path spelled otherwise (dir/ for dir, ./f for f) names the same data: the run's own spelling is kept
  given = {k: was[k] if k in PATH_OPTIONS and k in was and same_paths(was[k], v) else v for k, v in overrides}
  changes = [(k, was[k], v) for k, v in given.items()
             if k in was and k not in NOT_RESUMED and v != was[k] and not (k == "vocab_size" and v == 0)]
  if fixed := [c for c in changes if c[0] in RESUME_FIXED]:
    raise UserError("--init_from=resume cannot change " + ", ".join(f"--{k}={new} (the run's: {old})" for k, old, new in fixed) +
                    ": they fix the model's shape, its data or its random streams; drop them, or start a new run in another --out_dir")
  merged = dataclasses.replace(cfg, **{k: v for k, v in was.items() if (k not in given or given[k] == v) and hasattr(cfg, k)})
  validate(merged)
  return merged, changes

PATH_OPTIONS = ("data", "tokenizer", "val_data")

def same_paths(a, b) -> bool:
  """Whether two values of a comma-separated path option name the same sources: equal once normalised, or resolving
  to the same files from here."""
  from tinystory.data import source_list
  if not (isinstance(a, str) and isinstance(b, str)): return a == b
  norm = lambda v, f: [("name", s) if s in ("char", "bpe", "synthetic") or s.startswith("synthetic:") else ("path", f(s))
                       for s in source_list(v)]
  return a == b or norm(a, os.path.normpath) == norm(b, os.path.normpath) or norm(a, os.path.realpath) == norm(b, os.path.realpath)

def read_run_config(path: Path) -> dict:
  """A resumed run's config.json, which it keeps adding to (its command history, the divergence record): damaged, it
  is refused rather than replaced, since replacing it would lose them for good."""
  why = None
  try: cfg = json.loads(path.read_text(encoding="utf-8"))
  except OSError as e: why = e.strerror or str(e)
  except (ValueError, UnicodeDecodeError) as e: why = f"not valid JSON: {e}"
  else:
    if not isinstance(cfg, dict) or not isinstance(cfg.get("commands"), list): why = "not a JSON object with the run's commands"
  if why:
    raise UserError(f"{path} is damaged ({why[:80]}): it holds the run's command history and divergence record, which "
                    f"resuming would lose; put a good copy back, or move it away to resume without them")
  return cfg

def check_diverged(run_config: dict, meta: dict, changes: list, cfg: TrainConfig) -> None:
  """A run that diverged after its checkpoint, resumed as it was, diverges again (resume is bit-exact): refused; with
  changed options, a note."""
  d = run_config.get("diverged")
  if not isinstance(d, dict) or not isinstance(d.get("iter"), int) or d["iter"] < meta["iter_num"]: return
  what = f"this run diverged at step {d['iter']} ({d.get('what')}) after its checkpoint of step {meta['iter_num']}"
  if changes: return log(f"note: {what}; resuming with changed options")
  raise UserError(f"{what}: resumed with the same options it diverges again, exactly (resume is bit-exact); "
                  f"change an option, e.g. {divergence_advice(cfg)}")

def divergence_advice(cfg: TrainConfig) -> str:
  return (f"a lower --learning_rate (now {cfg.learning_rate:g}; e.g. --learning_rate={cfg.learning_rate / 10:g})" +
          ("" if cfg.grad_clip else " or --grad_clip=1.0"))

# *** the command ***

def train(cfg: TrainConfig, overrides: list[tuple[str, object]] = (), argv: list[str] | None = None,
          recipe: dict | None = None, from_recipe: list[tuple[str, object]] = ()) -> dict:
  """Run training as llama2.c's train.py does; `overrides` are the options given on the command line, in order (they
  are logged as `Overriding: k = v`; on resume the run's saved options are the defaults and these change them);
  `argv` is the command line after `cli.py` (default: this process's), recorded in config.json so that the run can be
  reproduced. `recipe` is the recipe file given (recipe.load_recipe) and `from_recipe` the options it set (those not
  typed): on resume they count as given, like `overrides`. Returns a summary dict (iterations, best val loss, run dir).
  The run dir is locked for the whole run (one trainer per run dir). What is logged before every input has been checked
  is held back: a run that fails before it starts leaves the run dir as it was (and removes it if it made it)."""
  validate(cfg)
  if cfg.wandb_log: import_wandb()  # before anything is printed or made (a resume's saved option is checked in _train)
  rdir = run_dir(cfg.out_dir)
  created = create_dirs(rdir, "--out_dir")
  pending, handlers = log_to_pending(), []
  try:
    with training_lock(rdir), Interrupted() as interrupted, contextlib.ExitStack() as held:
      return _train(cfg, rdir, overrides, recipe, [*from_recipe, *overrides], sys.argv[1:] if argv is None else argv, interrupted,
                    start_log=lambda: handlers.append(log_to_file(rdir / "train.log", pending)), hold=held.enter_context)
  except BaseException as e:
    # the run's log holds everything printed, its last line too: the `Error: ...` line the CLI prints (a full disk
    # that fails this write as well leaves it on the console only)
    if isinstance(e, UserError) and handlers: log_only_to(handlers[0], f"Error: {e}")
    if not (rdir / "config.json").exists(): remove_created(created)
    raise
  finally:
    for h in (pending, *handlers): stop_logging_to(h)

def check_scratch(rdir: Path, cfg: TrainConfig) -> None:
  """A scratch run never replaces a checkpoint (ckpt/ or, after a crash mid-save, ckpt.prev/) unless --overwrite=True."""
  try: ck = find_checkpoint(rdir)
  except UserError: return
  if not cfg.overwrite:
    raise UserError(f"{rdir} already holds a checkpoint ({ck}): pass --init_from=resume to continue it, --overwrite=True "
                    "to delete that run and start a new one there, or another --out_dir")

def clear_run(rdir: Path) -> None:
  """--overwrite=True: the previous run's files go, once the new run has passed every check."""
  try:
    for name in (CKPT, CKPT + ".prev", CKPT + ".tmp", GOOD, CKPT + ".diverged"): shutil.rmtree(rdir / name, ignore_errors=True)
    for name in RUN_FILES: (rdir / name).unlink(missing_ok=True)
  except OSError as e: raise UserError(f"--overwrite: cannot delete the previous run in {rdir}: {e.strerror or e}") from None
  log(f"--overwrite=True: deleted the previous run in {rdir}")

def model_file_options(cfg: TrainConfig, given: dict) -> tuple[TrainConfig, dict]:
  """--init_from=MODEL (a llama2.c .bin or a Hugging Face directory): unless given, its own context length and its own
  tokenizer (tokenizer.bin beside the .bin, the directory's tokenizer.json), so that the data is tokenized as the
  model was trained; a longer --max_seq_len than the model's is refused (its RoPE and weights were never trained on one).
  Returns the options and what was taken from the model file."""
  from tinystory.loader import model_file_context
  from tinystory.loader import load_tokenizer
  ctx, vocab, own_tok = model_file_context(cfg.init_from)
  changes = {}
  if "max_seq_len" not in given and ctx > 0: changes["max_seq_len"] = ctx
  elif ctx > 0 and cfg.max_seq_len > ctx:
    raise UserError(f"--max_seq_len={cfg.max_seq_len} is longer than the context of {cfg.init_from} ({ctx}): give at most {ctx}")
  if "tokenizer" not in given and own_tok.is_file(): changes["tokenizer"] = str(own_tok)
  tok_file = changes.get("tokenizer", cfg.tokenizer)
  if vocab and tok_file not in ("char", "bpe") and (n := load_tokenizer(tok_file).vocab_size) != vocab:  # before the data
    raise UserError(f"tokenizer {tok_file} has {n} tokens but {cfg.init_from} has vocab_size={vocab}: pass its own tokenizer")
  if vocab and tok_file in ("char", "bpe") and not cfg.vocab_size: changes["vocab_size"] = vocab  # fitted to its size
  return dataclasses.replace(cfg, **changes), changes

def model_args_for(cfg: TrainConfig, vocab_size: int) -> dict:
  return dict(dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads, vocab_size=vocab_size,
              multiple_of=cfg.multiple_of, max_seq_len=cfg.max_seq_len, dropout=cfg.dropout, ffn_bias=cfg.ffn_bias,
              unembedding=cfg.unembedding)

def _train(cfg: TrainConfig, rdir: Path, overrides, recipe, given, argv, interrupted: Interrupted, start_log, hold) -> dict:
  from tinystory.model import ModelArgs, Transformer, uses_pinv
  from tinystory.loader import load_tokenizer
  from tinystory.tokenizer import MIN_VOCAB
  from tinystory.pinv import check_full_rank
  from tinystory import pretok
  if recipe: log(describe_recipe(recipe))
  for k, v in overrides: log(f"Overriding: {k} = {v}")
  # every input is checked before anything is written or compiled: options, run dir, checkpoint, data, shapes
  resume, changes = (load_resume(rdir), []) if cfg.init_from == "resume" else (None, [])
  if resume: cfg, changes = resumed_config(cfg, resume, given)
  else: check_scratch(rdir, cfg)
  from_model = {}
  if not resume and cfg.init_from != "scratch": cfg, from_model = model_file_options(cfg, dict(given))
  wandb = import_wandb() if cfg.wandb_log else None
  device = set_device(cfg.device, several=True)
  on_cpu = all(d.startswith("CPU") for d in devices_of(device))
  # llama2.c autocasts to bf16/fp16 on GPUs only: on the CPU it trains in float32 whatever --dtype says
  if cfg.dtype != "float32" and not on_cpu: raise UserError(f"--dtype={cfg.dtype} is not supported on {cfg.device} yet: use --dtype=float32")
  tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.max_seq_len
  log(f"tokens per iteration will be: {tokens_per_iter:,}")
  log(f"breaks down as: {cfg.gradient_accumulation_steps} grad accum steps * 1 processes * {cfg.batch_size} batch size * {cfg.max_seq_len} max seq len")
  if cfg.dtype != "float32": log(f"note: --dtype={cfg.dtype} has no effect on the CPU (as in llama2.c): training in float32")

  # data and tokenizer (resume: the run's own copy of the tokenizer and the shards it was trained on)
  if resume:
    shard_dir, tok_path = Path(resume.meta["shard_dir"]), rdir / "tokenizer.tok"
    tok = load_tokenizer(tok_path)
    pretok.check_tokenizer_matches(pretok.load_meta(shard_dir), tok)
    if resume.meta.get("tokenizer_sha256") not in (None, tok.sha256):
      raise UserError(f"{tok_path} is not the tokenizer the checkpoint was trained with (sha256 differs): put that one back")
    model_args, init_weights = {**resume.meta["model_args"], "dropout": cfg.dropout}, resume.weights  # the checkpoint's shape
  else:
    if cfg.init_from == "scratch": ModelArgs(**model_args_for(cfg, cfg.vocab_size or MIN_VOCAB["char"]))  # before the data
    shard_dir, tok_path = resolve_data(cfg)
    tok = load_tokenizer(tok_path)
    model_args, init_weights = model_args_for(cfg, tok.vocab_size), None
    if cfg.init_from != "scratch":  # a model file: its shape and weights (its vocabulary must be the data tokenizer's)
      from tinystory.loader import load_model_file
      src, _ = load_model_file(cfg.init_from, tok_path)
      model_args = {**dataclasses.asdict(src.args), "dropout": cfg.dropout, "max_seq_len": cfg.max_seq_len}
      init_weights = model_weights(src)
  hold(pretok.reading(shard_dir))  # for the whole run: a data prepare into it is refused meanwhile
  tok_bytes, data_meta = tok.to_bytes(), pretok.load_meta(shard_dir)
  if val_dir := resolve_val_data(cfg.val_data, tok_path): hold(pretok.reading(val_dir))
  if val_dir: log(f"val loss on --val_data {cfg.val_data}: all of {val_dir}")
  if wandb and not cfg.wandb_run_name: cfg = dataclasses.replace(cfg, wandb_run_name="run" + time.strftime("%Y_%m_%d_%H_%M_%S"))
  # the val split is first read at the first eval, after a train-split eval: too short is an error now, not then
  # the val data: all of --val_data, else the val split of the shards
  val_shards, val_meta, val_split = (val_dir, pretok.load_meta(val_dir), "all") if val_dir else (shard_dir, data_meta, "val")
  pretok.split_windows(val_shards, val_meta, val_split, cfg.max_seq_len)
  for d, m in {shard_dir: data_meta, val_shards: val_meta}.items(): pretok.check_token_ids(d, m)  # before the run dir is written
  def batches(split: str, state=None, shards=shard_dir):
    return pretok.PretokDataset(shards, split, cfg.batch_size, cfg.max_seq_len, state=state)

  # the model, in llama2.c's order of messages (its weights are numpy-initialised: nothing is compiled yet)
  if resume:
    log(f"Resuming training from {cfg.out_dir}")
    if resume.restored: log(f"restored {rdir / CKPT} from {resume.restored} (a save was cut short)")
    for k, old, new in changes: log(f"changed on resume: {k} = {new} (was {old})")
  else: log("Initializing a new model from scratch" if cfg.init_from == "scratch" else f"Initializing from {cfg.init_from}" +
            "".join(f", its {k} {v}" for k, v in from_model.items()))
  model = Transformer(ModelArgs(**model_args), seed=None if init_weights else cfg.seed, grad_chunk=choose_for(device).grad_chunk)
  if isinstance(device, tuple):
    model.shard(device)
    log(f"data parallel over {len(device)} devices ({', '.join(device)}): each micro-batch of {cfg.batch_size} is split "
        f"into {len(device)} shards of {cfg.batch_size // len(device)}, the gradients all-reduced")
  num_params = {group: {"tensors": n, "parameters": p} for group, (n, p) in zip(("decayed", "non-decayed"), model.num_params())}
  for group, n in num_params.items():
    log(f"num {group} parameter tensors: {n['tensors']}, with {n['parameters']:,} parameters")
  log("using fused AdamW: False")
  train_batches = batches("train", resume.meta["data_state"] if resume else None)  # checks a resumed data state
  config_path = rdir / "config.json"
  run_config = read_run_config(config_path) if resume and config_path.exists() else {}
  if resume: check_diverged(run_config, resume.meta, changes, cfg)

  # every input checked: the run starts (its log, config.json; --overwrite deletes the old run first)
  if not resume and cfg.overwrite and any((rdir / n).exists() for n in (CKPT, CKPT + ".prev", *RUN_FILES)): clear_run(rdir)
  start_log()
  if not resume: write_atomic(rdir / "tokenizer.tok", tok_bytes)
  run_config.update(options=dataclasses.asdict(cfg), model_args=model_args, num_params=num_params, shard_dir=str(shard_dir),
                    data_meta=data_meta, val_shard_dir=val_dir and str(val_dir),
                    tokenizer={"path": str(tok_path), "kind": tok.kind, "vocab_size": tok.vocab_size, "sha256": tok.sha256},
                    versions=versions(), **({"recipe": recipe} if recipe else {}),
                    commands=run_config.get("commands", []) + [shlex.join(["python", "cli.py", *argv])])
  write_atomic(config_path, json.dumps(run_config, indent=1))
  iter_num, best_val_loss = (resume.meta["iter_num"], resume.meta["best_val_loss"]) if resume else (0, 1e9)
  if init_weights: model.load_state_dict(init_weights)
  set_rng_state(resume.meta["rng_state"] if resume else {"seed": cfg.seed, "counter": None}, device)

  steps = TrainSteps(model, cfg)
  if resume: steps.opt.load_state_dict(resume.opt, resume.meta["opt_step"], model.shapes)
  if resume and (was := resume.meta.get("versions", {}).get("kernel_opts")) and was != (now := kernel_opts.describe()):
    log(f"note: the checkpoint was trained with the CPU kernel table {was}; now {now}: from here the floats differ from "
        f"an uninterrupted run's by rounding")

  run = RunRecord(rdir, cfg.out_dir, run_config, pretok.unigram_loss(val_shards, val_meta, val_split), divergence_advice(cfg),
                  resume.meta if resume else None)
  # ckpt.json's fields that stay the same all run
  fixed = {"model_args": model_args, "config": dataclasses.asdict(cfg), "shard_dir": str(shard_dir), "tokenizer_sha256": tok.sha256,
           "versions": versions()}

  peak = cfg.peak_flops or (3e11 if on_cpu else 312e12)
  if wandb: wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=dataclasses.asdict(cfg))
  t_start = t0 = time.time()
  local_iter, running_mfu, ema_dt = 0, -1.0, None
  losses = {"val": run.saved["val_loss"] if run.saved else math.inf}  # the last eval's: a Ctrl-C save is judged by it
  while True:
    lr = get_lr(iter_num, cfg)
    if iter_num % cfg.eval_interval == 0:
      losses = {"train": estimate_loss(steps, batches("train"), cfg.eval_iters),
                "val": estimate_loss(steps, batches(val_split, shards=val_shards), cfg.eval_iters)}
      run.lowest_val = min(run.lowest_val, losses["val"])
      log(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
      if not all(map(math.isfinite, losses.values())): run.diverge(f"the eval's loss is {losses['val']} (val), {losses['train']} (train)", iter_num)
      # the pinv unembedding needs E of full rank: log its Gram's condition number, stop clearly if it is lost
      cond = check_full_rank(model.weights["tok_embeddings.weight"][:tok.vocab_size]) if uses_pinv(model.args) else None
      run.record(iter=iter_num, train_loss=losses["train"], val_loss=losses["val"], lr=lr, tokens=iter_num * tokens_per_iter,
             time=time.time() - t_start, gram_cond=cond)
      if wandb:  # llama2.c's series, and its handling of a failure
        try: wandb.log({"iter": iter_num, "tokens": iter_num * tokens_per_iter, "loss/train": losses["train"],
                        "loss/val": losses["val"], "lr": lr, "mfu": running_mfu * 100}, step=iter_num)
        except Exception as e: log(f"logging to wandb failed: {e}")
      if losses["val"] < best_val_loss or cfg.always_save_checkpoint:
        best_val_loss = losses["val"]
        if iter_num > 0: checkpoint_run(run, model, steps, train_batches, device, {**fixed, "iter_num": iter_num, "best_val_loss": best_val_loss}, losses["val"])
    if iter_num == 0 and cfg.eval_only: break

    for _ in range(cfg.gradient_accumulation_steps):
      loss = steps.micro_step(*train_batches.next_batch())
    steps.update(lr)
    lossf = loss.item()  # the last micro-batch's loss, as llama2.c logs it
    t1 = time.time()
    dt, t0 = t1 - t0, t1
    if not math.isfinite(lossf): run.diverge(f"loss is {lossf}", iter_num)
    if local_iter >= 1: ema_dt = dt if ema_dt is None else 0.9 * ema_dt + 0.1 * dt
    run.record(iter=iter_num, loss=lossf, lr=lr, dt=dt, tokens=(iter_num + 1) * tokens_per_iter, time=t1 - t_start)
    if iter_num % cfg.log_interval == 0:
      if local_iter >= 5:
        mfu = estimate_mfu(model, tokens_per_iter, dt, peak)
        running_mfu = mfu if running_mfu == -1.0 else 0.9 * running_mfu + 0.1 * mfu
      eta = fmt_duration((cfg.max_iters - iter_num) * ema_dt) if ema_dt else "?"
      log(f"{iter_num} | loss {lossf:.4f} | lr {lr:e} | {dt*1000:.2f}ms | mfu {running_mfu*100:.2f}% | "
          f"{tokens_per_iter / dt:,.0f} tok/s | eta {eta}")
    iter_num += 1
    local_iter += 1
    if interrupted.flag:  # saved as of the last eval's val loss
      checkpoint_run(run, model, steps, train_batches, device, {**fixed, "iter_num": iter_num, "best_val_loss": best_val_loss}, losses["val"])
      how = "interrupted" if interrupted.signum == signal.SIGINT else f"{signal.Signals(interrupted.signum).name} received"
      log(f"{how}: saved step {iter_num} to {rdir / CKPT}; continue with --init_from=resume --out_dir={cfg.out_dir}")
      break
    if iter_num > cfg.max_iters: break
  run.close()
  if wandb: wandb.finish()
  return {"iter_num": iter_num, "best_val_loss": best_val_loss, "run_dir": str(rdir), "interrupted": interrupted.flag,
          "signal": interrupted.signum}


def versions() -> dict:
  from tinystory.replay import tinygrad_version
  return {"tinystory": __version__, "tinygrad": tinygrad_version(), "numpy": np.__version__,
          "python": platform.python_version(), "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus",
          "kernel_opts": kernel_opts.describe()}

