"""Evaluation: how well a model predicts a text, in nats and bits per token, bits per character and bits per byte.

What is counted. The text is tokenized as training sees it: every story (data.iter_stories: stripped, empty ones
dropped) encoded with BOS first and no EOS, the stories concatenated into one stream t[0], ..., t[N-1]; a prepared
shard directory holds that stream already (its val shard, or its train shards in order). With L = the model's
max_seq_len, window k is t[kL : kL+L+1], as training cuts its windows: it feeds t[kL : kL+L] and predicts the L
targets t[kL+1 : kL+L+1]. Windows do not overlap in their targets, and the last one is shorter when the text does not
fill it (its padding is not counted; causal attention keeps it from the real positions), so every token but the
first is predicted exactly once, from the tokens since its window began. The first token is a BOS, which stands for
no text; every later BOS is predicted and counted (it is the model's "the story ends here": there is no EOS).
`max_windows` evaluates the first windows only.

  nats   = the sum over the predicted tokens of -ln p(token | its window's tokens before it)
  tokens = the number of predicted tokens
  bytes  = their UTF-8 bytes: each token's bytes in the vocabulary (BOS none, <unk> the 3 of '⁇')
  chars  = their characters: the bytes that begin a UTF-8 character (a character split over two BPE tokens counts
           once, with the token that holds its first byte)

Since the one token never predicted is a BOS, chars and bytes are the whole text's: sum(len(story)) and
sum(len(story.encode())) (a character outside a char vocabulary is one <unk>: one character, the 3 bytes of '⁇').
A llama2.c tokenizer.bin encodes each story as run.c does, after a ' ' (SentencePiece's dummy prefix): the first
token after each BOS begins with that space, which is not counted, so chars and bytes stay the text's.
loss = nats / tokens; bits per token = loss / ln 2; bits per char = nats / ln 2 / chars; bits per byte likewise.
Only bits per character and per byte compare models with different tokenizers.
"""
import math
from typing import Callable
import numpy as np
from tinygrad import dtypes
from tinystory import need, pretok
from tinystory.config import EvalConfig
from tinystory.data import iter_stories, source_list
from tinystory.device import read, using_device, zeros
from tinystory.loader import load_for_inference
from tinystory.log import log
from tinystory.replay import ReplayJit

# *** the text as one stream of token ids ***

class TokenStream:
  """Arrays of token ids read as their concatenation (shards stay memory-mapped, however many there are)."""
  def __init__(self, chunks: list[np.ndarray]):
    self.chunks = [c for c in chunks if len(c)]
    self.starts = np.cumsum([0] + [len(c) for c in self.chunks])
  def __len__(self) -> int: return int(self.starts[-1])
  def __getitem__(self, s: slice) -> np.ndarray:
    a, b = max(s.start, 0), min(s.stop, len(self))
    i, out = int(np.searchsorted(self.starts, a, "right")) - 1, []
    while a < b:
      part = self.chunks[i][a - self.starts[i]:b - self.starts[i]]
      out.append(part)
      a, i = a + len(part), i + 1
    return np.concatenate(out) if out else np.zeros(0, np.uint16)

def text_tokens(sources: list[str], tok, split: str | None = None, limit: int | None = None) -> tuple[TokenStream, str]:
  """The token stream of `sources` (raw sources, or one prepared shard directory, whose `split` is read: "val" by
  default) and a description of it. `limit`: raw text is encoded only until that many tokens are there."""
  if shard_dir := pretok.prepared_dir(sources):
    meta = pretok.load_meta(shard_dir)
    pretok.check_tokenizer_matches(meta, tok)
    shards = pretok.split_shards(meta, split or "val")
    return (TokenStream([np.memmap(shard_dir / s["file"], np.uint16, "r") for s in shards]),
            f"{sources[0]} ({split or 'val'} split, {len(shards)} shard{'s' * (len(shards) != 1)})")
  need(not split, f"--split={split} is for a prepared shard directory; --data {','.join(sources)} is raw text")
  chunks, n = [], 0
  for story in iter_stories(sources):
    chunks.append(tok.encode_array(story, bos=True))
    n += len(chunks[-1])
    if limit is not None and n >= limit: break
  need(bool(chunks), f"--data {','.join(sources)} holds no stories to evaluate on")
  return TokenStream(chunks), ",".join(sources)

def token_sizes(tok) -> tuple[np.ndarray, np.ndarray]:
  """(UTF-8 bytes, characters) of every token id: its characters are the bytes that begin one (not 0b10xxxxxx)."""
  bs = [tok.token_bytes(i) for i in range(tok.vocab_size)]
  return np.array([len(b) for b in bs], np.int64), np.array([sum((c & 0xC0) != 0x80 for c in b) for b in bs], np.int64)

# *** the model's losses, batch by batch ***

def token_losses(model, batch_size: int, compile: bool = True) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
  """-ln p(y | x) of every position of a (batch_size, max_seq_len) batch: one forward of fixed shapes, compiled
  (replay.ReplayJit) when `compile`; a partial batch is padded."""
  def nll(x, y): return model(x).sparse_categorical_crossentropy(y, reduction="none").realize()
  jit = ReplayJit(nll, tuple(zeros((batch_size, model.args.max_seq_len), dtype=dtypes.int64) for _ in "xy"), compile=compile)
  return lambda x, y: read(jit(x, y))

# *** the evaluation ***

def evaluate(model, tok, stream: TokenStream, batch_size: int = 16, max_windows: int | None = None, compile: bool = True,
             progress: Callable[[int, int], None] | None = None) -> dict:
  """The counts and losses of the module docstring for `model` on `stream`: {windows, tokens, chars, bytes,
  unk_tokens, nats, loss, bits_per_token, bits_per_char, bits_per_byte}. `progress(windows_done, windows)`."""
  L = model.args.max_seq_len
  need(len(stream) >= 2, "the text has no token to predict: it needs at least one story")
  windows = -(-(len(stream) - 1) // L)
  if max_windows is not None: windows = min(windows, max_windows)
  losses, (tok_bytes, tok_chars) = token_losses(model, batch_size, compile), token_sizes(tok)
  dummy = getattr(tok, "dummy_prefix", False)  # only a tokenizer.bin's encoder adds one
  tok_space = np.array([tok.token_bytes(i)[:1] == b" " for i in range(tok.vocab_size)]) if dummy else None
  nats, tokens, chars, nbytes, unk = 0.0, 0, 0, 0, 0
  for first in range(0, windows, batch_size):
    x, y = (np.zeros((batch_size, L), np.int64) for _ in "xy")
    mask = np.zeros((batch_size, L), bool)
    for row, k in enumerate(range(first, min(first + batch_size, windows))):
      w = stream[k * L:k * L + L + 1].astype(np.int64)
      x[row, :len(w) - 1], y[row, :len(w) - 1], mask[row, :len(w) - 1] = w[:-1], w[1:], True
    nll = losses(x, y)[mask]
    need(np.isfinite(nll).all(), f"the model's loss is not finite (NaN or inf) in windows {first}..{first + batch_size - 1}: "
         "the checkpoint is broken")
    targets = y[mask]
    nats += float(nll.astype(np.float64).sum())
    # a tokenizer.bin's encoder puts a ' ' before each story (its dummy prefix): the first token after a BOS begins
    # with it, and that space is not the text's
    prefix = int(((x[mask] == tok.bos_id) & tok_space[targets]).sum()) if dummy else 0
    tokens, chars, nbytes = tokens + len(targets), chars + int(tok_chars[targets].sum()) - prefix, nbytes + int(tok_bytes[targets].sum()) - prefix
    unk += int((targets == tok.unk_id).sum())
    if progress: progress(min(first + batch_size, windows), windows)
  bits = nats / math.log(2)
  return {"windows": windows, "tokens": tokens, "chars": chars, "bytes": nbytes, "unk_tokens": unk, "nats": nats,
          "loss": nats / tokens, "bits_per_token": bits / tokens, "bits_per_char": bits / max(chars, 1),
          "bits_per_byte": bits / max(nbytes, 1)}

def run_eval(cfg: EvalConfig, progress: Callable[[int, int], None] | None = None) -> dict:
  """`python cli.py eval`: load the model (loader.load_for_inference), read --data, evaluate; logs a summary and
  returns evaluate's dict with the checkpoint, data and max_seq_len added."""
  need(bool(sources := source_list(cfg.data)), "--data is required: the text to evaluate on (story "
       "files, dirs, globs or synthetic[:N], or a prepared shard dir)")
  cfg.validate()
  with using_device(cfg.device):  # tinygrad's default device for the command, put back after it
    model, tok, ck = load_for_inference(cfg.checkpoint, cfg.tokenizer)
    L, max_windows = model.args.max_seq_len, cfg.max_windows or None
    stream, what = text_tokens(sources, tok, cfg.split or None, max_windows and max_windows * L + 1)
    log(f"evaluating {ck} on {what}: {len(stream):,} tokens, windows of {L + 1} tokens predicting {L}")
    res = evaluate(model, tok, stream, cfg.batch_size, max_windows, cfg.compile, progress)
    if res["unk_tokens"]:
      log(f"warning: {res['unk_tokens']:,} characters of the text are not in the tokenizer's vocabulary: each is one <unk>, "
          f"scored as that token")
    log(f"{res['windows']:,} windows: {res['tokens']:,} tokens predicted, {res['chars']:,} characters, {res['bytes']:,} bytes")
    log(f"loss {res['loss']:.4f} nats/token | {res['bits_per_token']:.4f} bits/token | {res['bits_per_char']:.4f} bits/char "
        f"| {res['bits_per_byte']:.4f} bits/byte")
    return {"checkpoint": str(ck), "data": what, "max_seq_len": L, **res}
