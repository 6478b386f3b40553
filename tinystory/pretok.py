"""Pretokenized shards, llama2.c style, and the batches served from them.

`prepare` encodes every story with BOS in front (no EOS), concatenates the ids into uint16 files DIR/shard_0000.bin,
... and DIR/meta.json; all of it in this process's own sibling DIR.prepare-tmp.<pid> first, swapped in atomically
when complete (files.install_dir), so a failed or killed prepare leaves DIR as it was, and DIR is locked meanwhile:
a second prepare into it waits, one into shards a `train` reads is refused. Shard 0 is the validation split: the
first `val_fraction` of the stories (at least one; default 2%, as llama2.c holds out the first of the hub's 50
shards); the others are train, a new one begun
once a shard reaches `shard_tokens`, always at a story boundary. Re-running with the same sources (by content),
tokenizer and options reuses the shards. BPE encoding runs on every core; char encoding, a table lookup, in this process.

`PretokDataset` is llama2.c's PretokDataset + DataLoader: each epoch shuffles the order of the split's shards, each
shard is cut into windows of max_seq_len+1 tokens starting at multiples of max_seq_len (the last partial one
dropped), shuffled, and batch_size consecutive windows make one (x, y) batch, y being x shifted by one token.
"""
import collections, contextlib, json, multiprocessing, os, random, re, shutil
from pathlib import Path
from typing import Callable, Iterator
import numpy as np
from tinystory import UserError, create_dirs, remove_created, temp_name, write_atomic
from tinystory.config import SPLITS
from tinystory.files import install_dir, lock_for_writing, reading as read_lock, recover_output
from tinystory.data import ENCODING_ERRORS, describe_sources, expand_sources, iter_stories
from tinystory.log import log

FORMAT = 1
VAL_FRACTION = 0.02
SHARD_TOKENS = 1 << 24  # 32 MiB of uint16: the full TinyStories with a char vocabulary makes about 110 shards
CHUNK_STORIES = 256     # stories per task sent to an encoding worker

SHARD_NAME = re.compile(r"shard_\d{4,}\.bin")
META_FIELDS = {"vocab_size": int, "bos_id": int, "tokenizer_sha256": str, "tokenizer_path": str, "sources": list,
               "shards": list, "val_fraction": float, "shard_tokens": int, "encoding_errors": str}

def prepared_dir(sources: list[str]) -> Path | None:
  """The shard directory `sources` name when they are one prepared by `data prepare` (it holds meta.json), else None."""
  return Path(sources[0]) if len(sources) == 1 and (Path(sources[0]) / "meta.json").is_file() else None

def _shard_name(i: int) -> str: return f"shard_{i:04d}.bin"

def _write_json(path: Path, obj) -> None: write_atomic(path, json.dumps(obj, indent=1) + "\n")

# ---- encoding, on every core ----

_worker_tok = None

def _init_worker(tokenizer_path: str) -> None:
  global _worker_tok
  from tinystory.loader import load_tokenizer  # here, not at the top: loader imports the model, and so tinygrad
  _worker_tok = load_tokenizer(tokenizer_path)

def _encode_chunk(stories: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """The ids of the stories concatenated, each with BOS first, and each story's length in tokens."""
  ids = [_worker_tok.encode_array(s, bos=True) for s in stories]
  return np.concatenate(ids), np.array([len(a) for a in ids], np.int64)

def _chunks(stories: Iterator[str], n_val: int) -> Iterator[list[str]]:
  """Lists of up to CHUNK_STORIES stories, one ending exactly at the val/train boundary."""
  chunk, seen = [], 0
  for s in stories:
    chunk.append(s)
    seen += 1
    if len(chunk) == CHUNK_STORIES or seen == n_val:
      yield chunk
      chunk = []
  if chunk: yield chunk

def _encoded(chunks: Iterator[list[str]], tokenizer_path: Path, workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """_encode_chunk of every chunk, in order. A pool with a bounded queue, since Pool.imap would read the whole corpus
  into memory ahead of the workers."""
  if workers <= 1:
    _init_worker(str(tokenizer_path))
    yield from map(_encode_chunk, chunks)
    return
  with multiprocessing.Pool(workers, _init_worker, (str(tokenizer_path),)) as pool:
    pending = collections.deque()
    for chunk in chunks:
      pending.append(pool.apply_async(_encode_chunk, (chunk,)))
      if len(pending) >= 2 * workers: yield pending.popleft().get()
    while pending: yield pending.popleft().get()

class _ShardWriter:
  """Appends encoded stories to shard files in a (temp) directory."""
  def __init__(self, out: Path, shard_tokens: int):
    self.out, self.shard_tokens, self.shards, self.f = out, shard_tokens, [], None

  def _open(self) -> None:
    self.shards.append({"file": _shard_name(len(self.shards)), "tokens": 0, "stories": 0})
    self.f = open(self.out / self.shards[-1]["file"], "wb")

  def close(self) -> None:
    if self.f is None: return
    self.f.flush()
    os.fsync(self.f.fileno())
    self.f.close()
    self.f = None

  def add(self, ids: np.ndarray, lengths: np.ndarray, val: bool) -> None:
    if self.f is None or (not val and len(self.shards) == 1):  # the val shard, then train from shard 1
      self.close()
      self._open()
    start = end = 0  # ids[start:end]: counted in the current shard, not yet written
    for n in lengths.tolist():
      if not val and self.shards[-1]["tokens"] >= self.shard_tokens:  # full: begin the next one at this story
        self.f.write(ids[start:end].tobytes())
        start = end
        self.close()
        self._open()
      self.shards[-1]["tokens"] += n
      self.shards[-1]["stories"] += 1
      end += n
    self.f.write(ids[start:end].tobytes())

# ---- prepare ----

def _inputs(meta: dict) -> list:
  """What the shards are a function of: equal inputs, equal shards."""
  return [meta["format"], [s["sha256"] for s in meta["sources"]], meta["tokenizer_sha256"], meta["val_fraction"],
          meta["shard_tokens"], meta["encoding_errors"]]

def prepare(sources: list[str], tokenizer_path, out_dir, val_fraction: float = VAL_FRACTION,
            shard_tokens: int = SHARD_TOKENS, errors: str = "strict", workers: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> dict:
  """Encode the stories of `sources` into shards in out_dir (see the module docstring) and return its meta.
  `progress(stories_done, stories_total)` is called as chunks are written."""
  from tinystory.loader import load_tokenizer  # (as in _init_worker: data prepare never needs tinygrad)
  if not 0 < val_fraction < 1: raise UserError(f"val fraction {val_fraction}: expected a number between 0 and 1")
  if shard_tokens < 1: raise UserError(f"shard tokens {shard_tokens}: expected a positive number of tokens")
  if errors not in ENCODING_ERRORS: raise UserError(f"encoding errors {errors!r}: expected one of {', '.join(ENCODING_ERRORS)}")
  out, tok, sources = Path(out_dir), load_tokenizer(tokenizer_path), expand_sources(sources)  # read 3 times below
  if tok.vocab_size > 1 << 16:
    raise UserError(f"tokenizer {tokenizer_path} has {tok.vocab_size:,} tokens: shards store token ids as uint16, at most 65,536")
  if out.exists() and not out.is_dir(): raise UserError(f"--out {out} is a file, expected a directory")
  meta = {"format": FORMAT, "sources": describe_sources(sources), "tokenizer_path": str(Path(tokenizer_path).resolve()),
          "tokenizer_sha256": tok.sha256, "vocab_size": tok.vocab_size, "bos_id": tok.bos_id,
          "val_fraction": val_fraction, "shard_tokens": shard_tokens, "encoding_errors": errors}
  def reusable() -> dict | None:
    try: old = load_meta(out) if (out / "meta.json").is_file() else None
    except UserError: return None  # damaged: rebuild
    return old if old is not None and _inputs(old) == _inputs(meta) else None
  created, out_was = create_dirs(out.absolute().parent, "--out"), out.exists()
  recover_output(out, "prepare")
  while (lock := lock_for_writing(out, "--out", "a `train`", lambda: reusable() is None,
                                  lambda: log(f"waiting for another data prepare writing {out} to finish ..."))) is None:
    if (old := reusable()) is not None:  # else another writer swapped other shards in meanwhile: look again
      log(f"{out} already holds these shards (same sources, tokenizer and options): reusing them")
      return old
  tmp, writer = temp_name(out, "prepare"), None
  try:
    total = sum(1 for _ in iter_stories(sources, errors))  # a first pass, to size the val split
    if total < 2: raise UserError(f"data {' '.join(map(str, sources))}: {total} stories, need at least 2 (1 val + 1 train)")
    n_val = min(total - 1, max(1, round(val_fraction * total)))
    if workers is None:  # char encoding is one numpy lookup, cheaper than shipping the text to a worker (measured)
      workers = (os.cpu_count() or 1) if tok.kind == "bpe" and total > 4 * CHUNK_STORIES else 1
    # built whole in this process's own sibling directory, then swapped in: `out` is always the old or the new output
    shutil.rmtree(tmp, ignore_errors=True)  # a killed process's of the same pid
    tmp.mkdir()
    writer, done = _ShardWriter(tmp, shard_tokens), 0
    for ids, lengths in _encoded(_chunks(iter_stories(sources, errors), n_val), tokenizer_path, workers):
      writer.add(ids, lengths, val=done < n_val)
      done += len(lengths)
      if progress: progress(done, total)
    writer.close()
    meta.update(stories=total, tokens=sum(s["tokens"] for s in writer.shards), shards=writer.shards)
    _write_json(tmp / "meta.json", meta)  # fsyncs tmp too
    install_dir(tmp, out, lambda name: name == "meta.json" or name.startswith(("shard_", "meta.json.")))
  except BaseException as e:
    if writer and writer.f: writer.f.close()
    shutil.rmtree(tmp, ignore_errors=True)
    if not out_was:  # the empty directory the lock made (another writer's complete output is not empty)
      with contextlib.suppress(OSError): out.rmdir()
    remove_created(created)
    if isinstance(e, OSError):
      raise UserError(f"data prepare into {out} failed: {e.filename + ': ' if e.filename else ''}{e.strerror or e}") from None
    raise
  finally: os.close(lock)
  val = writer.shards[0]
  log(f"{out}: {total:,} stories, {meta['tokens']:,} tokens in {len(writer.shards)} shards; "
      f"val = {val['file']} ({val['stories']:,} stories, {val['tokens']:,} tokens)")
  return meta

def reading(shard_dir):
  """A shared lock on a shard directory for as long as a run reads it (a context manager): a `data prepare` into it
  is refused meanwhile, and shards being prepared are refused here."""
  return read_lock(Path(shard_dir), "data prepare")

def load_meta(shard_dir) -> dict:
  """The meta.json of a prepared directory, its shard files checked to exist with the sizes it says."""
  path = Path(shard_dir) / "meta.json"
  if not path.is_file():
    raise UserError(f"{shard_dir} is not a prepared shard directory (no meta.json); make one with "
                    f"`python cli.py data prepare --out {shard_dir} ...`")
  try: meta = json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError): raise UserError(f"{path} is not valid JSON; run data prepare again") from None
  except OSError as e: raise UserError(f"cannot read {path}: {e.strerror or e}") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise UserError(f"{path}: not shard format {FORMAT}; run data prepare again")
  def need(ok: bool, what: str):
    if not ok: raise UserError(f"{path}: {what}; run data prepare again")
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
  for k, kind in META_FIELDS.items():
    v = meta.get(k)
    need(not isinstance(v, bool) and isinstance(v, (int, float) if kind is float else kind), f"{k} is missing or not a {kind.__name__}")
  need(1 <= meta["vocab_size"] <= 65535 and 0 <= meta["bos_id"] < meta["vocab_size"], "vocab_size or bos_id is out of range")
  need(all(isinstance(src, dict) and isinstance(src.get("sha256"), str) for src in meta["sources"]), "sources are malformed")
  for s in meta["shards"]:
    need(isinstance(s, dict) and isinstance(s.get("file"), str) and SHARD_NAME.fullmatch(s["file"]) is not None and
         is_int(s.get("tokens")) and s["tokens"] >= 0 and is_int(s.get("stories")), f"shard entry {json.dumps(s)[:80]} is malformed")
    f = Path(shard_dir) / s["file"]
    if not f.is_file() or f.stat().st_size != 2 * s["tokens"]:
      raise UserError(f"{f} is missing or is not the {s['tokens']:,} tokens {path} says; run data prepare again")
  return meta

def check_tokenizer_matches(meta: dict, tok) -> None:
  """UserError unless `tok` is the tokenizer the shards were made with."""
  if tok.vocab_size != meta["vocab_size"]:
    raise UserError(f"the tokenizer has vocab_size {tok.vocab_size} but the shards were made with vocab_size "
                    f"{meta['vocab_size']} ({meta['tokenizer_path']}); use that tokenizer or prepare the data again")
  if tok.sha256 != meta["tokenizer_sha256"]:
    raise UserError(f"the tokenizer (sha256 {tok.sha256[:16]}) is not the one the shards were made with "
                    f"({meta['tokenizer_path']}, sha256 {meta['tokenizer_sha256'][:16]}); use that tokenizer or prepare "
                    f"the data again")

def check_token_ids(shard_dir, meta: dict) -> None:
  """UserError if a shard holds a token id >= vocab_size (a damaged or foreign file), which the model would read past
  its embedding table with. Train checks before its run starts: a memory-mapped max of each shard (a few GB/s, cached
  pages), so such shards leave no run behind; PretokDataset.next_batch checks each batch as well."""
  for s in meta["shards"]:
    if not s["tokens"]: continue
    f = Path(shard_dir) / s["file"]
    try: top = int(np.memmap(f, dtype=np.uint16, mode="r").max())
    except OSError as e: raise UserError(f"cannot read {f}: {e.strerror or e}") from None
    if top >= meta["vocab_size"]:
      raise UserError(f"{f} holds token id {top}, but vocab_size is {meta['vocab_size']} ({Path(shard_dir) / 'meta.json'}): "
                      f"the shards are corrupt; run data prepare again")

# ---- batches ----

def split_shards(meta: dict, split: str) -> list[dict]:
  """The shards of a split: "val" shard 0, "train" the others, "all" every one (data held out as a whole, such as
  `train --val_data`)."""
  if split not in SPLITS: raise UserError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
  return {"train": meta["shards"][1:], "val": meta["shards"][:1], "all": meta["shards"]}[split]

def split_windows(shard_dir, meta: dict, split: str, max_seq_len: int) -> tuple[list[dict], list[int]]:
  """The shards of `split` and how many windows of max_seq_len+1 tokens each holds; UserError if none does (checked
  before a run builds its model: the val split is otherwise first read at the first eval)."""
  shards = split_shards(meta, split)
  windows = [max(0, s["tokens"] // max_seq_len - 1) for s in shards]  # llama2.c drops the last partial window
  if sum(windows) == 0:
    n = sum(s["tokens"] for s in shards)
    raise UserError(f"{shard_dir}: the {split} split has {n:,} tokens, too few for one window of max_seq_len+1 = "
                    f"{max_seq_len + 1} (a shard needs at least 2*max_seq_len = {2 * max_seq_len}); prepare more "
                    f"data{' or a larger --val-fraction' if split == 'val' else ''}, or use a smaller max_seq_len")
  return shards, windows

def unigram_loss(shard_dir, meta: dict, split: str) -> float:
  """The split's unigram entropy in nats per token: the loss of a model that predicts each token by its frequency
  alone, which any trained model beats."""
  counts = sum(np.bincount(np.memmap(Path(shard_dir) / s["file"], np.uint16, "r"), minlength=1 << 16)
               for s in split_shards(meta, split) if s["tokens"])
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())

class PretokDataset:
  """Endless (x, y) int64 batches of shape (batch_size, max_seq_len) from the `split` (see split_shards) of a prepared
  directory, memory-mapped. The order is a function of `seed` alone; `state()` is a JSON-able cursor, and a dataset
  made with `state=` (or `restore`d) yields exactly the batches the original would have next."""
  def __init__(self, shard_dir, split: str, batch_size: int, max_seq_len: int, seed: int = 42, state: dict | None = None):
    if batch_size < 1 or max_seq_len < 1:
      raise UserError(f"batch_size {batch_size} and max_seq_len {max_seq_len} must both be at least 1")
    meta = load_meta(shard_dir)
    self.dir, self.split, self.batch_size, self.max_seq_len, self.seed = Path(shard_dir), split, batch_size, max_seq_len, seed
    self.shards, self.windows = split_windows(shard_dir, meta, split, max_seq_len)
    self.vocab_size, self._maps = meta["vocab_size"], {}
    self.rng = random.Random(seed)
    log(f"Created a PretokDataset with rng seed {seed}")
    self.order, self.epoch, self.pos, self.ixs, self.win = list(range(len(self.shards))), 0, len(self.shards) - 1, [], 0
    self.shard_rng = self.rng.getstate()  # before the current shard's windows were shuffled: enough to redo it
    if state is not None: self.restore(state)

  def _next_shard(self) -> None:
    self.pos += 1
    if self.pos == len(self.order):  # a new epoch: shuffle the shard order in place, as llama2.c does
      self.rng.shuffle(self.order)
      self.pos, self.epoch = 0, self.epoch + 1
    self._shuffle_windows()

  def _shuffle_windows(self) -> None:
    self.shard_rng = self.rng.getstate()
    self.ixs, self.win = list(range(self.windows[self.order[self.pos]])), 0
    self.rng.shuffle(self.ixs)

  def _window(self) -> np.ndarray:
    while self.win == len(self.ixs): self._next_shard()
    i = self.order[self.pos]
    if i not in self._maps: self._maps[i] = np.memmap(self.dir / self.shards[i]["file"], dtype=np.uint16, mode="r")
    start = self.ixs[self.win] * self.max_seq_len
    self.win += 1
    return self._maps[i][start:start + self.max_seq_len + 1]

  def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
    chunk = np.stack([self._window() for _ in range(self.batch_size)])
    if (top := int(chunk.max())) >= self.vocab_size:  # the model would read past its embedding table
      raise UserError(f"{self.dir}: a {self.split} shard holds token id {top}, but vocab_size is {self.vocab_size}: the "
                      f"shards are corrupt; run data prepare again")
    chunk = chunk.astype(np.int64)
    return np.ascontiguousarray(chunk[:, :-1]), np.ascontiguousarray(chunk[:, 1:])

  def __iter__(self): return self
  def __next__(self): return self.next_batch()

  def _identity(self) -> dict:
    return {"split": self.split, "seed": self.seed, "max_seq_len": self.max_seq_len, "windows": self.windows}

  def state(self) -> dict:
    version, internal, gauss = self.shard_rng
    return {**self._identity(), "epoch": self.epoch, "order": list(self.order), "pos": self.pos, "window": self.win,
            "shard_rng": [version, list(internal), gauss]}

  def restore(self, state: dict) -> None:
    if not isinstance(state, dict): raise UserError(f"the data state {json.dumps(state)[:60]} is not a JSON object")
    if {k: state.get(k) for k in self._identity()} != self._identity():
      raise UserError(f"the data state (split {state.get('split')!r}, seed {state.get('seed')}, max_seq_len "
                      f"{state.get('max_seq_len')}) was saved over other settings or shards than these (split "
                      f"{self.split!r}, seed {self.seed}, max_seq_len {self.max_seq_len}, {self.dir}); resume with the ones "
                      f"it was saved with")
    n, is_int = len(self.shards), lambda v: isinstance(v, int) and not isinstance(v, bool)
    epoch, order, pos, window = (state.get(k) for k in ("epoch", "order", "pos", "window"))
    try:
      version, internal, gauss = state["shard_rng"]
      self.rng.setstate((version, tuple(internal), gauss))
      ok = (is_int(epoch) and epoch >= 0 and isinstance(order, list) and all(map(is_int, order)) and
            sorted(order) == list(range(n)) and is_int(pos) and 0 <= pos < n and is_int(window) and
            0 <= window <= self.windows[order[pos]])
    except (KeyError, TypeError, ValueError, OverflowError): ok = False
    if not ok: raise UserError(f"the data state (epoch, order, pos, window, shard_rng) is corrupt: {json.dumps(state)[:80]}...")
    self.shard_rng = self.rng.getstate()
    self.epoch, self.order, self.pos, self.ixs, self.win = epoch, list(order), pos, [], 0
    if self.epoch > 0:  # redo the current shard's shuffle from the rng state it started with
      self._shuffle_windows()
      self.win = window
