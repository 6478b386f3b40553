"""Training: llama2.c's train.py loop in tinygrad, with exact resume and a complete run record.

A run lives in one directory (`./runs/<out_dir>`, see rundir.py): train.log (everything printed, verbatim),
metrics.jsonl (one JSON object per iteration and per eval), config.json (resolved options, parameter counts, data,
tokenizer, versions, command lines), tokenizer.tok (a copy) and ckpt/ (the checkpoint, written by checkpoint.py).
`train` checks every input before it writes anything (the options, the run dir; on resume the checkpoint and the
run's saved options, by resume.py's rules; the data; the model's shape), then starts the run and loops as llama2.c's
train.py does.
"""
import contextlib, dataclasses, json, math, os, platform, shlex, signal, sys, time
from pathlib import Path
import numpy as np
from tinygrad import Context, Tensor, dtypes
from tinystory import __version__, UserError, data, kernel_opts, pretok, write_atomic
from tinystory.checkpoint import CKPT, model_weights
from tinystory.config import ModelArgs, TrainConfig
from tinystory.device import choose_for, compile_workers_kept, devices_of, patched, rng_state, set_rng_state, tinygrad_version, using_device, zeros
from tinystory.loader import load_model_file, load_tokenizer
from tinystory.log import fmt_duration, log
from tinystory.model import Transformer, uses_pinv
from tinystory.optim import AdamW, get_lr, weight_decays
from tinystory.pinv import check_full_rank
from tinystory.recipe import describe as describe_recipe
from tinystory.replay import ReplayJit
from tinystory.resume import (Resume, check_diverged, divergence_advice, load_resume, model_file_options, read_run_config,
                              resumed_config, resumed_data)
from tinystory.rundir import RunLog, RunRecord, check_scratch, clear_run, training_run
from tinystory.tokenizer import MIN_VOCAB, fit_tokenizer

# *** data and tokenizer ***

def resolve_data(cfg: TrainConfig) -> tuple[Path, Path]:
  """(shard dir, tokenizer file) for --data/--tokenizer: prepared shards are used as they are; raw sources get a
  tokenizer fitted (unless a file is given) and shards prepared, in a cache keyed by content (see data.cache_dir)."""
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

def check_vocab_size(cfg: TrainConfig, tok_path: Path):
  tok = load_tokenizer(tok_path)
  if cfg.vocab_size and cfg.vocab_size != tok.vocab_size:
    raise UserError(f"--vocab_size={cfg.vocab_size} disagrees with the tokenizer {tok_path}, which has "
                    f"{tok.vocab_size} tokens: drop --vocab_size or pass a tokenizer of that size")
  return tok

def prepare_cached(sources: list[str], tok_path: Path, tok, key: str | None = None) -> Path:
  """The shards of raw `sources` with the tokenizer, prepared once into the cache (key: data.sources_key)."""
  shard_dir = data.cache_dir() / f"shards-{(key or data.sources_key(sources))[:16]}-{tok.sha256[:12]}"
  log(f"preparing shards of {','.join(sources)} with {tok_path} -> {shard_dir}")
  pretok.prepare(sources, tok_path, shard_dir)
  return shard_dir

def resolve_val_data(val_data: str, tok_path: Path) -> Path | None:
  """The shard dir of --val_data (None when not given): a prepared one as it is, raw sources prepared with the run's
  tokenizer into the cache. Every shard of it is val data."""
  if not (sources := data.source_list(val_data)): return None
  tok = load_tokenizer(tok_path)
  if shard_dir := pretok.prepared_dir(sources):
    pretok.check_tokenizer_matches(pretok.load_meta(shard_dir), tok)
    return shard_dir
  return prepare_cached(sources, tok_path, tok)

# *** one training iteration: compiled steps and the optimizer state they update ***

class TrainSteps:
  """micro_step (forward + backward of one micro-batch, accumulating gradients), update (clip + AdamW: `opt`) and
  eval_loss, each a replay.ReplayJit of fixed input tensors that each call uploads the new batch (or lr and step) into,
  compiled when cfg.compile (TinyJit, then its kernels replayed on every core). Until close() (or the end of a `with`
  block) tinygrad compiles the step's slowest CPU kernels with the searched table (kernel_opts.hooks), in workers kept
  for many kernels (device.compile_workers_kept: for the process, where the pool starts here), and its allocator
  keeps no freed buffers for reuse: the first (eager) step and the JIT capture free a whole step's worth of them,
  which would then sit in that cache for good (off, the seed config peaks at 1.8 GB, not 2.8)."""
  def __init__(self, model, cfg: TrainConfig):
    with contextlib.ExitStack() as held:  # tinygrad's settings, kept by a TrainSteps made, put back if making one fails
      held.enter_context(patched({"LRU": 0}, (*kernel_opts.hooks(), *compile_workers_kept())))
      self.model, self.cfg, self.params = model, cfg, model.parameters()
      self.opt = AdamW(self.params, weight_decays(self.params, cfg.weight_decay), cfg.beta1, cfg.beta2, cfg.grad_clip)
      # on several devices (model.shard) the gradients are replicated like the weights and each batch is split
      devices = model.weights["norm.weight"].device
      self.grad_acc = [zeros(p.shape, devices) for p in self.params]
      self.batch = tuple(zeros((cfg.batch_size, cfg.max_seq_len), devices, dtype=dtypes.int64, axis=0) for _ in ("x", "y"))
      self._micro = ReplayJit(self._micro_step, self.batch, compile=cfg.compile)
      self._eval = ReplayJit(self._eval_loss, self.batch, compile=cfg.compile)
      self._update = ReplayJit(self._update_step, (zeros((1,), devices), zeros((1,), devices)), compile=cfg.compile)
      self.held = held.pop_all()

  def close(self) -> None: self.held.close()  # tinygrad's settings as they were (several: in the reverse order of making)
  def __enter__(self): return self
  def __exit__(self, *_): self.close()

  def _micro_step(self, x, y):
    with Context(TRAINING=1):
      loss = self.model(x).sparse_categorical_crossentropy(y)
      grads = loss.gradient(*self.params)
    n = self.cfg.gradient_accumulation_steps
    Tensor.realize(loss, *[a.assign(a + g / n) for a, g in zip(self.grad_acc, grads)])
    return loss

  def _update_step(self, lr, step):
    Tensor.realize(*self.opt.update(self.grad_acc, lr, step), *[a.assign(a.zeros_like()) for a in self.grad_acc])
    return lr

  def _eval_loss(self, x, y): return self.model(x).sparse_categorical_crossentropy(y).realize()

  def micro_step(self, x: np.ndarray, y: np.ndarray, profile: list | None = None):
    """Forward and backward on the token ids x and targets y, (batch_size, max_seq_len): returns the loss tensor.
    `profile`: see replay.ReplayJit."""
    return self._micro(x, y, profile=profile)

  def eval_loss(self, x: np.ndarray, y: np.ndarray): return self._eval(x, y)

  def compiled(self) -> tuple[ReplayJit, ReplayJit]:
    """The micro-step's and the update's compiled functions (bench's roofline reads their kernels)."""
    return self._micro, self._update

  def update(self, lr: float, profile: list | None = None) -> None:
    self.opt.step += 1
    self._update(np.array([lr], np.float32), np.array([self.opt.step], np.float32), profile=profile)

# *** the run ***

def flops_per_token(model) -> float:
  """llama2.c's estimate (PaLM appendix B) of a training step's arithmetic: 6N + 12 L H Q T flops per token."""
  a = model.args
  return 6 * sum(n for _, n in model.num_params()) + 12 * a.n_layers * a.n_heads * a.head_dim * a.max_seq_len

def estimate_mfu(model, tokens_per_iter: int, dt: float, peak_flops: float) -> float:
  """llama2.c's model flops utilisation: flops_per_token * tokens_per_iter per dt, against peak_flops."""
  return flops_per_token(model) * tokens_per_iter / dt / peak_flops

def checkpoint_run(run: RunRecord, model, steps: TrainSteps, train_batches: pretok.PretokDataset, device, meta: dict, val_loss: float) -> None:
  """Checkpoint the run: the weights, the optimizer state and the positions of the data and of the dropout RNG."""
  run.save(model_weights(model), steps.opt.state_dict(model.shapes), {**meta, "opt_step": steps.opt.step,
           "data_state": train_batches.state(), "rng_state": rng_state(device)}, val_loss)

def estimate_loss(steps: TrainSteps, shards: Path, split: str, cfg: TrainConfig) -> float:
  """llama2.c's estimate_loss for one split of the shards: the mean loss of its first cfg.eval_iters batches."""
  batches = pretok.PretokDataset(shards, split, cfg.batch_size, cfg.max_seq_len)
  return float(np.mean([steps.eval_loss(*batches.next_batch()).item() for _ in range(cfg.eval_iters)]))

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

def import_wandb():
  """The wandb module for --wandb_log, or a one-line error saying how to install it."""
  try: import wandb
  except ImportError: raise UserError("--wandb_log=True needs the wandb package: pip install wandb (or pip install -e '.[wandb]')") from None
  return wandb

def versions() -> dict:
  return {"tinystory": __version__, "tinygrad": tinygrad_version(), "numpy": np.__version__,
          "python": platform.python_version(), "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus",
          "kernel_opts": kernel_opts.describe()}

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
  cfg.validate()
  if cfg.wandb_log: import_wandb()  # before anything is printed or made (a resume's saved option is checked in _train)
  argv = sys.argv[1:] if argv is None else argv
  with training_run(cfg.out_dir) as (rdir, run_log), Interrupted() as interrupted, contextlib.ExitStack() as held:
    return _train(cfg, rdir, run_log, held, interrupted, overrides, [*from_recipe, *overrides], recipe, argv)

def run_inputs(cfg: TrainConfig, resume: Resume | None, rdir: Path) -> tuple[Path, Path, object, dict, dict | None]:
  """(shard dir, tokenizer file, tokenizer, model_args, initial weights or None: the seed's init) of the run. A resume's
  are its own (resume.resumed_data; the checkpoint's shape and weights); a new run's come from --data and --tokenizer
  (resolve_data) and the options, or the shape and weights of --init_from's model file, whose vocabulary must be the
  data tokenizer's."""
  if resume: return (*resumed_data(rdir, resume), {**resume.meta["model_args"], "dropout": cfg.dropout}, resume.weights)
  if cfg.init_from == "scratch": ModelArgs(**cfg.model_args(cfg.vocab_size or MIN_VOCAB["char"]))  # the shape, before the data
  shard_dir, tok_path = resolve_data(cfg)
  tok = load_tokenizer(tok_path)
  if cfg.init_from == "scratch": return shard_dir, tok_path, tok, cfg.model_args(tok.vocab_size), None
  src, _ = load_model_file(cfg.init_from, tok_path)
  return (shard_dir, tok_path, tok, {**dataclasses.asdict(src.args), "dropout": cfg.dropout, "max_seq_len": cfg.max_seq_len},
          model_weights(src))

def build_model(cfg: TrainConfig, model_args: dict, init_weights: dict | None, device) -> tuple[Transformer, dict]:
  """The model (numpy-initialised from cfg.seed unless it has weights to load: nothing is compiled yet), on `device`,
  and its parameter counts, logged as llama2.c logs them."""
  model = Transformer(ModelArgs(**model_args), seed=None if init_weights else cfg.seed, grad_chunk=choose_for(device).grad_chunk)
  if isinstance(device, tuple):
    model.shard(device)
    log(f"data parallel over {len(device)} devices ({', '.join(device)}): each micro-batch of {cfg.batch_size} is split "
        f"into {len(device)} shards of {cfg.batch_size // len(device)}, the gradients all-reduced")
  num_params = {group: {"tensors": n, "parameters": p} for group, (n, p) in zip(("decayed", "non-decayed"), model.num_params())}
  for group, n in num_params.items():
    log(f"num {group} parameter tensors: {n['tensors']}, with {n['parameters']:,} parameters")
  log("using fused AdamW: False")
  return model, num_params

def _train(cfg: TrainConfig, rdir: Path, run_log: RunLog, held: contextlib.ExitStack, interrupted: Interrupted, overrides,
           given, recipe, argv) -> dict:
  """train's body, in llama2.c's order: every input checked (nothing written yet), the run started, the loop. `given`:
  the options given, the recipe's and then those typed (`overrides`)."""
  if recipe: log(describe_recipe(recipe))
  for k, v in overrides: log(f"Overriding: {k} = {v}")
  # every input is checked before anything is written or compiled: options, run dir, checkpoint, data, shapes
  resume, changes, from_model = None, [], {}
  if cfg.init_from == "resume":
    resume = load_resume(rdir)
    cfg, changes = resumed_config(cfg, resume, given)
  else:
    check_scratch(rdir, cfg.overwrite)
    if cfg.init_from != "scratch": cfg, from_model = model_file_options(cfg, dict(given))
  wandb = import_wandb() if cfg.wandb_log else None
  if wandb and not cfg.wandb_run_name: cfg = dataclasses.replace(cfg, wandb_run_name="run" + time.strftime("%Y_%m_%d_%H_%M_%S"))
  device = held.enter_context(using_device(cfg.device, several=True))  # tinygrad's settings until the run ends
  on_cpu = all(d.startswith("CPU") for d in devices_of(device))
  # llama2.c autocasts to bf16/fp16 on GPUs only: on the CPU it trains in float32 whatever --dtype says
  if cfg.dtype != "float32" and not on_cpu: raise UserError(f"--dtype={cfg.dtype} is not supported on {cfg.device} yet: use --dtype=float32")
  tokens_per_iter = cfg.gradient_accumulation_steps * cfg.batch_size * cfg.max_seq_len
  log(f"tokens per iteration will be: {tokens_per_iter:,}")
  log(f"breaks down as: {cfg.gradient_accumulation_steps} grad accum steps * 1 processes * {cfg.batch_size} batch size * {cfg.max_seq_len} max seq len")
  if cfg.dtype != "float32": log(f"note: --dtype={cfg.dtype} has no effect on the CPU (as in llama2.c): training in float32")

  # the data and tokenizer, read-locked for the whole run (a data prepare into them is refused meanwhile)
  shard_dir, tok_path, tok, model_args, init_weights = run_inputs(cfg, resume, rdir)
  held.enter_context(pretok.reading(shard_dir))
  tok_bytes, data_meta = tok.to_bytes(), pretok.load_meta(shard_dir)
  if val_dir := resolve_val_data(cfg.val_data, tok_path):
    held.enter_context(pretok.reading(val_dir))
    log(f"val loss on --val_data {cfg.val_data}: all of {val_dir}")
  # the val data: all of --val_data, else the val split of the shards. It is first read at the first eval, after a
  # train-split eval: too short is an error now, not then; so are token ids outside the vocabulary
  val_shards, val_meta, val_split = (val_dir, pretok.load_meta(val_dir), "all") if val_dir else (shard_dir, data_meta, "val")
  pretok.split_windows(val_shards, val_meta, val_split, cfg.max_seq_len)
  for d, m in {shard_dir: data_meta, val_shards: val_meta}.items(): pretok.check_token_ids(d, m)

  # the model, in llama2.c's order of messages
  if resume:
    log(f"Resuming training from {cfg.out_dir}")
    if resume.restored: log(f"restored {rdir / CKPT} from {resume.restored} (a save was cut short)")
    for k, old, new in changes: log(f"changed on resume: {k} = {new} (was {old})")
  else: log("Initializing a new model from scratch" if cfg.init_from == "scratch" else f"Initializing from {cfg.init_from}" +
            "".join(f", its {k} {v}" for k, v in from_model.items()))
  model, num_params = build_model(cfg, model_args, init_weights, device)
  train_batches = pretok.PretokDataset(shard_dir, "train", cfg.batch_size, cfg.max_seq_len,  # checks a resumed data state
                                       state=resume.meta["data_state"] if resume else None)
  config_path = rdir / "config.json"
  run_config = read_run_config(config_path) if resume and config_path.exists() else {}
  if resume: check_diverged(run_config, resume.meta, changes, cfg)

  # every input checked: the run starts (its log, config.json; --overwrite deletes the old run first)
  if not resume and cfg.overwrite: clear_run(rdir)
  run_log.start()
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
  steps = held.enter_context(TrainSteps(model, cfg))  # tinygrad's settings put back when the run ends
  if resume: steps.opt.load_state_dict(resume.opt, resume.meta["opt_step"], model.shapes)
  if resume and (was := resume.meta.get("versions", {}).get("kernel_opts")) and was != (now := kernel_opts.describe()):
    log(f"note: the checkpoint was trained with the CPU kernel table {was}; now {now}: from here the floats differ from "
        f"an uninterrupted run's by rounding")
  run = RunRecord(rdir, cfg.out_dir, run_config, pretok.unigram_loss(val_shards, val_meta, val_split), divergence_advice(cfg),
                  resume.meta if resume else None)
  # ckpt.json's fields that stay the same all run
  fixed = {"model_args": model_args, "config": dataclasses.asdict(cfg), "shard_dir": str(shard_dir), "tokenizer_sha256": tok.sha256,
           "versions": versions()}

  # the training loop
  peak = cfg.peak_flops or (3e11 if on_cpu else 312e12)
  if wandb: wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, config=dataclasses.asdict(cfg))
  t_start = t0 = time.time()
  local_iter, running_mfu, ema_dt = 0, -1.0, None
  losses = {"val": run.saved["val_loss"] if run.saved else math.inf}  # the last eval's: a Ctrl-C save is judged by it
  while True:
    lr = get_lr(iter_num, cfg)
    if iter_num % cfg.eval_interval == 0:
      losses = {"train": estimate_loss(steps, shard_dir, "train", cfg), "val": estimate_loss(steps, val_shards, val_split, cfg)}
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
