"""A training run's directory: where it is (`run_dir`), one trainer at a time in it (`training_lock`), a new run over
an old one (`check_scratch`, `clear_run`), the run's start once every input is checked (`training_run`: until then
nothing is written), and what the run writes into it as it goes besides train.log (`RunRecord`): metrics.jsonl (a
record per iteration and per eval), its checkpoints with the bookkeeping a divergence needs (the last one saved, and
the last one that looked trained), and config.json's record of a divergence (docs/training.md, "Resume, Ctrl-C,
divergence")."""
import contextlib, fcntl, json, math, os, shutil
from pathlib import Path
import numpy as np
from tinystory import UserError, create_dirs, open_append, open_nofollow, remove_created, write_atomic, write_error
from tinystory.checkpoint import CKPT, GOOD, find_checkpoint, replace_dir, runs_dir, save_checkpoint
from tinystory.log import drop_torn_line, log, log_only_to, log_to_file, log_to_pending, stop_logging_to

LOCK = "train.lock"  # held (flock) by the one `train` running in a run dir
RUN_FILES = ("train.log", "metrics.jsonl", "config.json", "tokenizer.tok", "sample.txt")  # what --overwrite deletes, with ckpt*

def run_dir(out_dir: str) -> Path:
  """The directory of `--out_dir`: as given when absolute, else under ./runs of the working directory."""
  return Path(out_dir) if os.path.isabs(out_dir) else runs_dir() / out_dir

# *** one trainer per run dir ***

@contextlib.contextmanager
def training_lock(rdir: Path):
  """Hold RUN_DIR/train.lock for a training run: a second trainer is refused with one line, and export-log sees the
  run is live (training_pid). flock: the kernel drops it when the process ends, however it ends (kill -9 too), so a
  stale lock never blocks. Creating the file is also the first write to the run dir: an unwritable one fails here."""
  path = rdir / LOCK
  try:
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
  except OSError as e: raise write_error(path, e, "--out_dir must be a writable directory") from None
  try:
    try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise UserError(f"{rdir} is in use: another `train` (pid {read_pid(fd)}) is running in it; wait for it to end (Ctrl-C "
                      "in it saves a checkpoint and stops), or pass another --out_dir") from None
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for the messages of the others
    except OSError as e: raise write_error(path, e) from None
    yield
  finally: os.close(fd)

def read_pid(fd: int) -> str: return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"

def training_pid(rdir: Path) -> str | None:
  """The pid of the `train` running in rdir, None if none is."""
  try: fd = os.open(rdir / LOCK, os.O_RDONLY | os.O_NOFOLLOW)
  except OSError: return None  # never trained here, unreadable or a link: no lock to find
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    return None
  except BlockingIOError: return read_pid(fd)
  finally: os.close(fd)  # closing drops our shared lock at once

# *** a run's start ***

class RunLog:
  """A training run's train.log, begun once every input is checked (`start`): what is logged before that is held back
  and goes in first, so that a run that fails before it starts writes no log."""
  def __init__(self, rdir: Path): self.path, self.pending, self.file = rdir / "train.log", log_to_pending(), None
  def start(self) -> None: self.file = log_to_file(self.path, self.pending)
  def close(self) -> None:
    for h in (self.pending, self.file):
      if h is not None: stop_logging_to(h)

@contextlib.contextmanager
def training_run(out_dir: str):
  """(run dir, its RunLog) of a training run in --out_dir: made if missing, and locked for the whole run (one trainer
  per run dir). A run that fails before it starts (before config.json is written) leaves the run dir as it was, and
  removes it if it made it; a started run's train.log ends with the failure's `Error: ...` line, as the CLI prints it."""
  rdir = run_dir(out_dir)
  created = create_dirs(rdir, "--out_dir")
  run_log = RunLog(rdir)
  try:
    with training_lock(rdir): yield rdir, run_log
  except BaseException as e:
    # the run's log holds everything printed, its last line too (a full disk that fails this write as well leaves it on
    # the console only)
    if isinstance(e, UserError) and run_log.file: log_only_to(run_log.file, f"Error: {e}")
    if not (rdir / "config.json").exists(): remove_created(created)
    raise
  finally: run_log.close()

def check_scratch(rdir: Path, overwrite: bool) -> None:
  """A new run never replaces a checkpoint (ckpt/ or, after a crash mid-save, ckpt.prev/) unless --overwrite=True."""
  try: ck = find_checkpoint(rdir)
  except UserError: return
  if not overwrite:
    raise UserError(f"{rdir} already holds a checkpoint ({ck}): pass --init_from=resume to continue it, --overwrite=True "
                    "to delete that run and start a new one there, or another --out_dir")

def clear_run(rdir: Path) -> None:
  """--overwrite=True: the previous run's files (if there is one) go, once the new run has passed every check."""
  if not any((rdir / n).exists() for n in (CKPT, CKPT + ".prev", *RUN_FILES)): return
  try:
    for name in (CKPT, CKPT + ".prev", CKPT + ".tmp", GOOD, CKPT + ".diverged"): shutil.rmtree(rdir / name, ignore_errors=True)
    for name in RUN_FILES: (rdir / name).unlink(missing_ok=True)
  except OSError as e: raise UserError(f"--overwrite: cannot delete the previous run in {rdir}: {e.strerror or e}") from None
  log(f"--overwrite=True: deleted the previous run in {rdir}")

# *** what a run writes as it goes ***

def looks_trained(val_loss: float, lowest_val_loss: float, unigram_loss: float) -> bool:
  """Whether a checkpoint saved at an eval of `val_loss` is one to go back to when the run diverges later: better than
  the tokens' own frequencies predict (the val data's unigram entropy) and within 1 nat of the run's lowest val loss.
  A diverging run's last finite checkpoints are typically neither: weights of ~1e8 that predict a nearly uniform
  distribution, or a loss far above the run's best."""
  return val_loss < unigram_loss and val_loss <= lowest_val_loss + 1.0

def checkpoint_record(ck: Path) -> dict | None:
  """{"iter", "val_loss", "dir"} of a checkpoint kept as ckpt.good, from its ckpt.json; None if there is none."""
  try: meta = json.loads((ck / "ckpt.json").read_text(encoding="utf-8"))
  except (OSError, ValueError): return None
  rec = {"iter": meta.get("iter_num"), "val_loss": meta.get("val_loss"), "dir": ck.name} if isinstance(meta, dict) else {}
  return rec if all(isinstance(rec.get(k), (int, float)) and not isinstance(rec.get(k), bool) for k in ("iter", "val_loss")) else None

class RunRecord:
  """The run directory `rdir` of a run under way (`name`: its --out_dir, for messages). `run_config` is config.json's
  content, `unigram` the val data's unigram loss (looks_trained), `advice` what a divergence says to change; a resumed
  run passes its checkpoint's ckpt.json as `resumed`."""
  def __init__(self, rdir: Path, name: str, run_config: dict, unigram: float, advice: str, resumed: dict | None = None):
    self.rdir, self.name, self.run_config, self.unigram, self.advice = rdir, name, run_config, unigram, advice
    self.metrics_path = rdir / "metrics.jsonl"
    drop_torn_line(self.metrics_path)  # a killed run's half-written record
    try: self.metrics = open_append(self.metrics_path)  # opened once: record() runs every iteration
    except OSError as e: raise write_error(self.metrics_path, e) from None
    # the checkpoints a divergence can send the user back to, as {"iter", "val_loss", "dir"}: the last saved, and the
    # last that looked trained (the same one, or kept as ckpt.good while always_save_checkpoint saves worse ones)
    self.saved = self.good = None
    self.lowest_val = math.inf  # the run's lowest val loss so far
    if resumed:
      self.saved = {"iter": resumed["iter_num"], "val_loss": resumed.get("val_loss", resumed["best_val_loss"]), "dir": CKPT}
      self.good = self.saved if resumed.get("looks_trained", True) else checkpoint_record(rdir / GOOD)
      self.lowest_val = resumed.get("lowest_val_loss", resumed["best_val_loss"])

  def record(self, **kw) -> None:
    """One line of metrics.jsonl."""
    try:
      self.metrics.write(json.dumps(kw) + "\n")
      self.metrics.flush()
    except OSError as e:
      self.close()  # the unwritten record is dropped, not retried at exit
      raise write_error(self.metrics_path, e) from None

  def close(self) -> None:
    try: self.metrics.close()
    except OSError: pass

  def save(self, weights: dict[str, np.ndarray], opt: dict[str, np.ndarray], meta: dict, val_loss: float) -> None:
    """Checkpoint the run (ckpt.json's `meta`, iter_num among it) as of an eval of `val_loss`; never a non-finite one."""
    if bad := next((n for n, a in {**weights, **opt}.items() if not np.isfinite(a).all()), None):
      self.diverge(f"{bad} is not finite", meta["iter_num"] - 1)  # never saved over a good checkpoint
    trained = looks_trained(val_loss, self.lowest_val, self.unigram)
    log(f"saving checkpoint to {self.name}")
    keep = not trained and self.good is not None and self.good is self.saved  # the last good one becomes ckpt.good
    save_checkpoint(self.rdir, weights, opt, {**meta, "val_loss": val_loss, "lowest_val_loss": self.lowest_val,
                                              "looks_trained": trained}, keep_old=keep)
    if trained: shutil.rmtree(self.rdir / GOOD, ignore_errors=True)
    elif keep: self.good = {**self.good, "dir": GOOD}
    self.saved = {"iter": meta["iter_num"], "val_loss": val_loss, "dir": CKPT}
    if trained: self.good = self.saved

  def diverge(self, what: str, step: int):
    """Stop a run whose loss or weights are no longer finite, recorded in config.json for a later resume, with the
    last checkpoint that looked trained (looks_trained) in ckpt/ to continue from."""
    rdir, good, saved = self.rdir, self.good, self.saved
    self.run_config["diverged"] = {"iter": step, "what": what}
    write_atomic(rdir / "config.json", json.dumps(self.run_config, indent=1))
    if good and good["dir"] == GOOD:  # always_save_checkpoint saved untrained-looking ones over it: it goes back
      replace_dir(rdir / CKPT, rdir / (CKPT + ".diverged"))
      os.replace(rdir / GOOD, rdir / CKPT)
      log(f"put the checkpoint of step {good['iter']} back in {rdir / CKPT}; the later one, of step {saved['iter']} "
          f"(val loss {saved['val_loss']:.4f}), is now {rdir / (CKPT + '.diverged')}")
    if good:
      where = (f"the last checkpoint that looked trained, step {good['iter']} (val loss {good['val_loss']:.4f}), is in "
               f"{rdir / CKPT}: continue it with --init_from=resume and")
    elif saved:
      where = (f"no checkpoint looks trained (the last, step {saved['iter']}, has val loss {saved['val_loss']:.4f}, no "
               f"better than the tokens' frequencies alone predict, {self.unigram:.4f}): start again with --overwrite=True and")
    else: where = "no checkpoint was saved: start again with"
    raise UserError(f"{what} at step {step}: training stopped; {where} {self.advice}")
