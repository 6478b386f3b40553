"""Sampling: llama2.c's sample.py with a KV cache, streamed token by token.

Semantics are llama2.c's `model.generate`: the prompt is encoded with BOS first (an empty prompt is BOS alone), and
every next token is drawn from the logits of the last `max_seq_len` tokens, RoPE positions counted from the start of
that window. A prompt character the tokenizer lacks is an error (as <unk> it would be a token the model never saw).
Output = the prompt's text, then each token's bytes as it is drawn (an incremental UTF-8 decoder holds
back a character split over several BPE tokens), then a line of dashes after each sample. A generated BOS starts a
new story: it is written as a blank line. The other specials write nothing (<unk> writes '⁇').

The model's layers are model.py's (Transformer.forward with a KVCache); this module drives them. One TinyJit-compiled
step of fixed shapes serves every position: the host uploads the token's embedding row into a small input buffer and
passes the position as a Variable (the cache slot written, the RoPE row read, the mask). On CPU the captured kernels
are then called straight from Python (replay.py): ~0.3 ms a token instead of ~4. While the sequence fits the context,
a token costs one step. Once it does not, the window slides, and since every hidden state depends on the window's
first token nothing in the cache survives: the window is recomputed (one batched prefill, then the step). With
`slide` = 1 (llama2.c) that is a recompute per token, exactly llama2.c's crop; `slide` = s > 1 drops the s oldest
tokens at once and then decodes s tokens from the cache, so the model sees max_seq_len - s + 1 to max_seq_len tokens
(faster, not llama2.c's output).
"""
import codecs, time
from pathlib import Path
from typing import Callable, Iterator
import numpy as np
from tinygrad import UOp
from tinystory import UserError
from tinystory.config import SampleConfig
from tinystory.device import read, using_device, zeros
from tinystory.loader import load_for_inference
from tinystory.log import log
from tinystory.model import KVCache
from tinystory.replay import ReplayJit

# *** the sampler: numpy on the host ***

def token_probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float = 1.0) -> np.ndarray:
  """The distribution the next token is drawn from: softmax(logits / temperature) over the top_k most likely tokens
  (exactly k; ties go to the lower id), cut to the fewest most likely whose probability reaches top_p, renormalised.
  temperature 0: all mass on the argmax."""
  probs = np.zeros(len(logits))
  order = np.argsort(-logits, kind="stable")[:top_k]  # most likely first
  if temperature == 0:
    probs[order[0]] = 1.0
    return probs
  z = logits[order].astype(np.float64) / temperature
  p = np.exp(z - z[0])
  p /= p.sum()
  if top_p < 1: p = p[:np.searchsorted(np.cumsum(p), top_p) + 1]  # the first index whose cumulative sum reaches top_p
  probs[order[:len(p)]] = p / p.sum()
  return probs

def sample_token(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> int:
  """One token id drawn from token_probs with one uniform of `rng` (greedy draws none)."""
  if not np.isfinite(logits).all():
    raise UserError("the model's logits are not finite (NaN or inf): the checkpoint is broken")
  if temperature == 0: return int(np.argmax(logits))
  c = np.cumsum(token_probs(logits, temperature, top_k, top_p))
  return int(np.searchsorted(c, rng.random() * c[-1], side="right"))

# *** the model behind a KV cache ***

class CachedDecoder:
  """`next_logits(seq)` = the model's logits after the last max_seq_len tokens of `seq`, as llama2.c's generate
  computes them (with slide=1), reusing the keys and values of the tokens the previous call saw. `seq` must extend
  the previous call's `seq`; `reset()` before an unrelated one."""
  def __init__(self, model, compile: bool = True, slide: int = 1):
    a, L = model.args, model.args.max_seq_len
    if not 1 <= slide <= L: raise UserError(f"--slide must be between 1 and the model's max_seq_len={L}, got {slide}")
    self.model, self.L, self.slide, self.cache = model, L, slide, KVCache(model)
    self.emb = model.weights["tok_embeddings.weight"].numpy()  # the host's embedding table: a token's input is its row
    self.pos = UOp.variable("pos", 0, L - 1)  # the step's position: the JIT's kernels take it as an argument
    self._step = ReplayJit(self.step_graph, (zeros((1, 1, a.dim)),), (self.pos,), compile)  # a token's embedding row
    self._fill = ReplayJit(self.fill_graph, (zeros((1, L, a.dim)),), compile=compile)  # a prompt's, padded
    self.reset()

  def reset(self) -> None: self.start, self.n = 0, 0  # the cache holds the K/V of seq[start:start+n], positions 0..n-1

  def next_logits(self, seq: list[int]) -> np.ndarray:
    if len(seq) - self.start > self.L:  # the window slides: the cache is stale, recompute it for the new window
      self.start, self.n = len(seq) - (self.L if self.n == 0 else self.L - self.slide + 1), 0
    todo = seq[self.start + self.n:]
    if not todo: raise ValueError("next_logits needs a token the cache has not seen")
    if self.n == 0 and len(todo) > 1: self.prefill(todo[:-1])
    else:
      for t in todo[:-1]: self.step(t)
    return self.step(todo[-1])

  def step(self, token: int) -> np.ndarray:
    """Feed one token at position n: its K/V go into the cache; returns the logits after it."""
    logits = read(self._step(self.emb[token].reshape(1, 1, -1), pos=self.n))
    self.n += 1
    return logits

  def prefill(self, tokens: list[int]) -> None:
    """Fill the cache with tokens at positions 0..len-1 in one batched forward, padded to max_seq_len rows: one
    compiled shape (and an even one: tinygrad's CPU kernels are slow on odd sizes). The padding's K/V land in slots
    that the mask hides until a step overwrites them."""
    rows = np.zeros((1, self.L, self.model.args.dim), np.float32)
    rows[0, :len(tokens)] = self.emb[tokens]
    self._fill(rows)
    self.n = len(tokens)

  # the graphs (TinyJit captures them on their second call and replays the kernels after that)

  def step_graph(self, h, pos): return self.model.forward(h, pos, self.cache).reshape(-1).realize()

  def fill_graph(self, h):
    self.model.forward(h, 0, self.cache)  # lazy: only what the cache needs is computed, not the last layer's outputs
    self.cache.realize()

def generate(decoder: CachedDecoder, prompt: list[int], max_new_tokens: int,
             pick: Callable[[np.ndarray], int]) -> Iterator[int]:
  """llama2.c's generate: yield max_new_tokens ids, each `pick`ed from the logits after the sequence so far."""
  seq = list(prompt)
  decoder.reset()
  for _ in range(max_new_tokens):
    seq.append(pick(decoder.next_logits(seq)))
    yield seq[-1]

# *** streaming text ***

class TextStream:
  """Writes token ids as text as they come: bytes through an incremental UTF-8 decoder, so a character split over
  several tokens is written whole once its last byte arrives; a BOS (a new story) is written as a blank line. With a
  tokenizer.bin (a dummy-prefix ' ' before each story) the space that begins a token after a BOS is dropped, as run.c
  prints it; `prev` is the token before the first one put (the prompt's last)."""
  def __init__(self, tok, write: Callable[[str], None], prev: int | None = None):
    self.tok, self.write, self.utf8, self.prev = tok, write, codecs.getincrementaldecoder("utf-8")("replace"), prev
  def put(self, token: int) -> None:
    piece = self.tok.token_bytes(token)
    if self.prev == self.tok.bos_id and getattr(self.tok, "dummy_prefix", False) and piece[:1] == b" ": piece = piece[1:]
    text, self.prev = self.utf8.decode(piece), token
    if token == self.tok.bos_id: text += self.utf8.decode(b"", final=True) + "\n\n"
    if text: self.write(text)
  def end(self) -> None:
    if text := self.utf8.decode(b"", final=True): self.write(text)  # an unfinished character becomes U+FFFD

def load_prompt(start: str, tok) -> list[int]:
  """BOS and the ids of --start (or of the file after 'FILE:'); characters the tokenizer lacks are an error, not <unk>."""
  what = "--start"
  if start.startswith("FILE:"):
    what = start[5:]
    try: start = Path(what).read_text(encoding="utf-8")
    except UnicodeDecodeError as e: raise UserError(f"--start file {what} is not UTF-8 (byte {e.start})") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the name
      raise UserError(f"cannot read --start file {what}: {getattr(e, 'strerror', None) or e}") from None
  ids = tok.encode(start, bos=True)
  if tok.unk_id in ids[1:]:  # only char vocabularies have unknowns; their ids are one per character
    unknown = sorted({c for c, i in zip(start, ids[1:]) if i == tok.unk_id})
    raise UserError(f"{what} has characters the tokenizer does not know: {' '.join(map(repr, unknown))}")
  return ids

def state_dict_lines(model) -> list[str]:
  """llama2.c's state dict, name and shape, in model order (pinv_scaled's output.log_scale among them); a tied or pinv
  model still has llama2.c's output.weight."""
  shapes = dict(model.shapes)
  shapes.setdefault("output.weight", shapes["tok_embeddings.weight"])
  return [f"{n} {list(s)}" for n, s in shapes.items()]

# *** the command ***

def sample(cfg: SampleConfig, overrides=(), write: Callable[[str], None] = lambda s: None, preamble: bool = True) -> dict:
  """Run llama2.c's sample.py: log the preamble (Overriding lines, ModelArgs, state-dict shapes), then stream
  num_samples samples through `write`. Returns {"samples": [token ids per sample], "tokens", "seconds"}."""
  cfg.validate()
  with using_device(cfg.device):  # tinygrad's default device for the command, put back after it
    model, tok, _ = load_for_inference(cfg.checkpoint, cfg.tokenizer)
    prompt = load_prompt(cfg.start, tok)
    decoder = CachedDecoder(model, cfg.compile, cfg.slide)
    if preamble:  # after every check, so that a mistake is a one-line error
      for k, v in overrides: log(f"Overriding: {k} = {v}")
      log(repr(model.args))
      for line in state_dict_lines(model): log(line)
    rng = np.random.default_rng(cfg.seed)
    def pick(logits): return sample_token(logits, cfg.temperature, cfg.top_k, cfg.top_p, rng)
    samples, t0 = [], time.perf_counter()
    for _ in range(cfg.num_samples):
      if text := tok.decode(prompt): write(text)
      stream = TextStream(tok, write, prompt[-1])
      samples.append([])
      for t in generate(decoder, prompt, cfg.max_new_tokens, pick):
        samples[-1].append(t)
        stream.put(t)
      stream.end()
      write("\n---------------\n")
    return {"samples": samples, "tokens": sum(map(len, samples)), "seconds": time.perf_counter() - t0}
