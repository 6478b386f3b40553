"""llama2.c's files, both ways: the model .bin files (run.c's legacy version 0, version 1, runq.c's Q8_0 version 2)
and tokenizer.bin, with run.c's prompt encoder (docs/exchange.md).

The layouts (little-endian, what llama2.c's export.py writes and run.c / runq.c read):
  version 0: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means
             an unshared classifier), then float32: embedding, attention norms, wq, wk, wv, wo, ffn norms, w1, w2, w3,
             final norm, RoPE cos and sin tables (seq_len, head_dim/2), the classifier if unshared.
  version 1: uint32 magic "ak42", int32 version, the 7 int32, uint8 shared classifier, zeros to 256 bytes; then float32:
             attention norms, ffn norms, final norm, embedding, wq, wk, wv, wo, w1, w2, w3, the classifier if unshared.
  version 2: as version 1 with int32 group size after the flag; the norms in float32, then each other tensor in
             version 1's order as int8 values followed by its float32 scales, one per group (Q8_0: w ~ q * scale).
  tokenizer.bin: int32 max token length; per token: float32 score, int32 length, the bytes.
Per-layer tensors are stored layer after layer. Reading never runs code from a file: numpy views of the bytes, after
the header is checked and the file's size is found to be exactly what the header implies.
"""
import hashlib, heapq, re, struct
from pathlib import Path
import numpy as np
from tinystory import UserError, write_atomic
from tinystory.log import log
from tinystory.model import rope_tables
from tinystory.tokenizer import N_SPECIAL, UNK_TEXT

MAGIC = 0x616b3432  # "ak42"
HEADER_BYTES = 256  # versions 1 and 2
CONFIG = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
GROUP_SIZE = 64      # export.py's default Q8_0 group, halved until it divides dim and hidden_dim
NEVER_MERGED = -1e10  # run.c merges a pair only if its score beats -1e10: specials get this score
BYTE_PIECE = re.compile(rb"<0x([0-9A-Fa-f]{2})>")

# *** model files ***

def tensor_order(c: dict, version: int, shared: bool) -> list[tuple[str, tuple[int, ...]]]:
  """(name, shape) of every tensor in file order, by the project's (llama2.c's state-dict) names."""
  d, h, L, kv, V, T = c["dim"], c["hidden_dim"], c["n_layers"], c["kv_dim"], c["vocab_size"], c["seq_len"]
  per = lambda name, shape: [(f"layers.{i}.{name}", shape) for i in range(L)]
  mats = [*per("attention.wq.weight", (d, d)), *per("attention.wk.weight", (kv, d)), *per("attention.wv.weight", (kv, d)),
          *per("attention.wo.weight", (d, d))]
  ffn = [*per("feed_forward.w1.weight", (h, d)), *per("feed_forward.w2.weight", (d, h)), *per("feed_forward.w3.weight", (h, d))]
  emb, cls = [("tok_embeddings.weight", (V, d))], [] if shared else [("output.weight", (V, d))]
  if version == 0:
    rope = [("freqs_cos", (T, d // c["n_heads"] // 2)), ("freqs_sin", (T, d // c["n_heads"] // 2))]
    return emb + per("attention_norm.weight", (d,)) + mats + per("ffn_norm.weight", (d,)) + ffn + [("norm.weight", (d,))] + rope + cls
  return per("attention_norm.weight", (d,)) + per("ffn_norm.weight", (d,)) + [("norm.weight", (d,))] + emb + mats + ffn + cls

def is_quantized(name: str) -> bool: return not name.endswith("norm.weight")

def check_config(c: dict, where: str, header: dict | None = None) -> None:
  """The header's numbers as run.c needs them; absurd values are refused before anything is sized by them. `header`:
  the values as the file holds them, for the errors (version 0's vocab_size is negative for an unshared classifier)."""
  for k in CONFIG:
    if not 0 < c[k] <= 1 << 20: raise UserError(f"{where}: header {k}={(header or c)[k]} is not in 1..{1 << 20}")
  if c["dim"] % c["n_heads"] or (c["dim"] // c["n_heads"]) % 2 or c["n_heads"] % c["n_kv_heads"]:
    raise UserError(f"{where}: header dim={c['dim']}, n_heads={c['n_heads']}, n_kv_heads={c['n_kv_heads']} do not make "
                    "an even head size with n_heads a multiple of n_kv_heads")
  c["kv_dim"] = c["dim"] // c["n_heads"] * c["n_kv_heads"]

def read_model_bin(path) -> tuple[dict, dict[str, np.ndarray], int]:
  """(config, weights by the project's names as float32 numpy, version) of a llama2.c .bin of version 0, 1 or 2.
  Version 2 comes back dequantized (q * scale). Every malformed file is a UserError naming it."""
  path = Path(path)
  try: raw = np.memmap(path, np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
  except OSError as e: raise UserError(f"cannot read model file {path}: {e.strerror}") from None
  size = len(raw)
  def ints(offset, n, fmt="i"):
    if size < offset + 4 * n: raise UserError(f"{path}: truncated header ({size} bytes): not a llama2.c model file")
    return struct.unpack_from(f"<{n}{fmt}", raw, offset)
  if ints(0, 1, "I")[0] == MAGIC:
    version = ints(4, 1)[0]
    if version not in (1, 2): raise UserError(f"{path}: llama2.c model version {version} is not supported (0, 1 or 2)")
    if size < HEADER_BYTES: raise UserError(f"{path}: truncated header ({size} bytes, expected {HEADER_BYTES})")
    c, shared, group = dict(zip(CONFIG, ints(8, 7))), bool(raw[36]), ints(37, 1)[0] if version == 2 else 0
    offset = HEADER_BYTES
  else:
    version, c, offset, group = 0, dict(zip(CONFIG, ints(0, 7))), 28, 0
    shared, c["vocab_size"] = c["vocab_size"] > 0, abs(c["vocab_size"])
  header = {**c, "vocab_size": c["vocab_size"] if shared or version else -c["vocab_size"]}  # as the file holds it
  check_config(c, str(path), header)
  # sized from the layouts of no layer and of one before the n_layers' names are made: a damaged header's n_layers
  # of up to 2**20 would make millions of them, and numbers up to 2**20 imply terabytes, before the size refused it
  one, none = (tensor_order({**c, "n_layers": L}, version, shared) for L in (1, 0))
  if version == 2:
    if not 0 < group <= 1 << 20 or any(int(np.prod(s)) % group for n, s in one if is_quantized(n)):
      raise UserError(f"{path}: group size {group} does not divide the tensor sizes")
  nbytes = lambda order: sum(tensor_bytes(n, s, version, group) for n, s in order)
  expected = offset + nbytes(none) + c["n_layers"] * (nbytes(one) - nbytes(none))
  if size != expected:
    raise UserError(f"{path}: {size:,} bytes, but its header ({', '.join(f'{k}={header[k]}' for k in CONFIG)}, version {version}) "
                    f"implies {expected:,}: truncated, or not a llama2.c model file")
  weights = {}
  for name, shape in tensor_order(c, version, shared):
    n = int(np.prod(shape))
    if version == 2 and is_quantized(name):
      q = np.frombuffer(raw, np.int8, n, offset).reshape(-1, group)
      s = np.frombuffer(raw, "<f4", n // group, offset + n)
      weights[name] = (q.astype(np.float32) * s[:, None]).reshape(shape)
    else: weights[name] = np.frombuffer(raw, "<f4", n, offset).astype(np.float32).reshape(shape)
    offset += tensor_bytes(name, shape, version, group)
  return {**c, "shared_classifier": shared, "group_size": group}, weights, version

def tensor_bytes(name: str, shape, version: int, group: int) -> int:
  n = int(np.prod(shape))
  return n + 4 * (n // group) if version == 2 and is_quantized(name) else 4 * n

def quantize_q80(w: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
  """export.py's Q8_0: per group of `group` values, scale = max|w| / 127 and q = round(w / scale) in [-127, 127]
  (round half to even, as torch.round). An all-zero group has scale 0 and q 0."""
  g = w.astype(np.float32).reshape(-1, group)
  scale = (np.abs(g).max(1) / np.float32(127)).astype(np.float32)
  with np.errstate(divide="ignore", invalid="ignore"): q = np.where(scale[:, None] > 0, np.round(g / scale[:, None]), 0)
  return q.astype(np.int8), scale

def q8_group_size(dim: int, hidden: int) -> int:
  """export.py's group (64, halved until it divides dim), also dividing hidden_dim: runq.c quantizes the activations
  of the w2 matmul in groups over hidden_dim and would silently drop a remainder."""
  group = GROUP_SIZE
  while dim % group or hidden % group: group //= 2
  return group

def model_bin(weights: dict[str, np.ndarray], c: dict, version: int) -> bytes:
  """The bytes of a version 0 or 2 file from `weights` (project names; output.weight present iff unshared) and the
  header values `c` (CONFIG's; version 0 also needs freqs_cos/freqs_sin in `weights`)."""
  shared = "output.weight" not in weights
  check_config(c := dict(c), "model")
  order = tensor_order(c, version, shared)
  vocab = c["vocab_size"] if shared or version else -c["vocab_size"]
  header = struct.pack("<7i", *[vocab if k == "vocab_size" else c[k] for k in CONFIG])
  if version == 0: return header + b"".join(np.ascontiguousarray(weights[n], "<f4").tobytes() for n, _ in order)
  assert version == 2, "only versions 0 and 2 are written"
  group = q8_group_size(c["dim"], c["hidden_dim"])
  header = struct.pack("<Ii", MAGIC, 2) + header + struct.pack("<Bi", shared, group)
  parts = [header.ljust(HEADER_BYTES, b"\0")]
  for name, shape in order:
    w = weights[name]
    assert w.shape == shape, (name, w.shape, shape)
    if is_quantized(name):
      q, s = quantize_q80(w, group)
      parts += [q.tobytes(), s.astype("<f4").tobytes()]
    else: parts.append(np.ascontiguousarray(w, "<f4").tobytes())
  return b"".join(parts)

# *** tokenizer.bin ***

SPECIAL_PIECES = [b"<unk>", b"\n<s>\n", b"\n</s>\n"]  # as llama2.c's tokenizer.py writes <unk>, BOS and EOS

def byte_piece(b: int) -> bytes:
  """A single-byte token's piece: the byte itself if run.c prints it (printable ASCII or whitespace), else <0xXX>,
  as SentencePiece's byte-fallback pieces are spelled (run.c decodes those to the byte)."""
  return bytes([b]) if 0x20 <= b < 0x7f or 0x09 <= b <= 0x0d else b"<0x%02X>" % b

def tokenizer_pieces(tok) -> list[bytes]:
  """The pieces of a project tokenizer as tokenizer.bin spells them, refused where run.c would misread them."""
  pieces = SPECIAL_PIECES + [byte_piece(t[0]) if len(t) == 1 and (tok.kind == "bpe" or t[0] < 0x20 or t[0] == 0x7f)
                             else t for t in (tok.token_bytes(i) for i in range(N_SPECIAL, tok.vocab_size))]
  if b" " not in pieces:
    raise UserError("the tokenizer has no ' ' token: run.c puts one before every prompt (its dummy prefix), so it "
                    "cannot use this tokenizer")
  if bad := next((p for p in pieces if b"\0" in p), None):
    raise UserError(f"token {bad!r} holds a NUL byte, which run.c's C strings cannot hold")
  if len(set(pieces)) != len(pieces):
    dup = next(p for p in pieces if pieces.count(p) > 1)
    raise UserError(f"token piece {dup!r} occurs twice in tokenizer.bin's spelling: run.c could not tell them apart")
  return pieces

def tokenizer_bin(tok) -> bytes:
  """tokenizer.bin for a project tokenizer. Scores: -id for ordinary tokens, so that run.c's encoder, which merges
  the adjacent pair with the best score, merges BPE pairs in the order they were learned (the project's BPE applies
  merges by id); NEVER_MERGED for the specials."""
  if isinstance(tok, RunCTokenizer): return tok.raw  # a tokenizer.bin trained on goes out as it came in
  pieces = tokenizer_pieces(tok)
  scores = [NEVER_MERGED] * 3 + [-float(i) for i in range(3, len(pieces))]
  return struct.pack("<i", max(map(len, pieces))) + b"".join(struct.pack("<fi", s, len(p)) + p for s, p in zip(scores, pieces))

def read_tokenizer_bin(path) -> "RunCTokenizer":
  """Read a tokenizer.bin; every malformed file is a UserError naming it."""
  try: raw = Path(path).read_bytes()
  except OSError as e: raise UserError(f"cannot read tokenizer file {path}: {e.strerror}") from None
  return parse_tokenizer_bin(raw, path)

def parse_tokenizer_bin(raw: bytes, path) -> "RunCTokenizer":
  """The RunCTokenizer of a tokenizer.bin's bytes (`path` names it in errors, which say what was read as what)."""
  def bad(what: str) -> UserError: return UserError(f"{path}, read as a llama2.c tokenizer.bin: {what}")
  if len(raw) < 4: raise bad(f"{len(raw)} bytes, too short")
  (max_len,), offset, pieces, scores = struct.unpack_from("<i", raw), 4, [], []
  if not 0 < max_len <= 1 << 16: raise bad(f"max token length {max_len} is not in 1..65536")
  while offset < len(raw):
    if offset + 8 > len(raw): raise bad(f"truncated at token {len(pieces)} (byte {offset})")
    score, n = struct.unpack_from("<fi", raw, offset)
    if not 0 <= n <= max_len or offset + 8 + n > len(raw):
      raise bad(f"token {len(pieces)} has length {n}: not in 0..{max_len} or past the end of the file")
    pieces.append(raw[offset + 8:offset + 8 + n]); scores.append(score)
    offset += 8 + n
  if len(pieces) < 4: raise bad(f"{len(pieces)} tokens: a tokenizer.bin has <unk>, <s>, </s> and more")
  return RunCTokenizer(pieces, np.array(scores, np.float32), raw, str(path))

class RunCTokenizer:
  """A tokenizer.bin's vocabulary with run.c's encoder and decoder, and the project Tokenizer's interface (encode,
  decode, token_bytes, vocab_size, bos/eos/unk ids, sha256), so that sample and eval can use it.

  encode is run.c's: a ' ' first (its dummy prefix, for non-empty text), each character looked up whole, else its
  UTF-8 bytes as ids byte + 3 (byte fallback), then repeatedly the adjacent pair whose concatenated pieces are a token
  of the best score is merged, the leftmost on a tie. Run with a heap rather than run.c's rescans (the same merges).
  A character with no token and no byte-fallback tokens at ids 3..258 is an error (run.c would use unrelated ids).
  decode is run.c's too: <0xXX> pieces are bytes, the space after a BOS is dropped, specials write nothing."""
  kind, pattern, unk_id, bos_id, eos_id = "llama2c", None, 0, 1, 2
  dummy_prefix = True  # encode puts a ' ' before the text that is not the text's (eval does not count it)

  def __init__(self, pieces: list[bytes], scores: np.ndarray, raw: bytes, name: str = "tokenizer.bin"):
    self.pieces, self.scores, self.name, self.vocab_size = pieces, scores, name, len(pieces)
    self.raw, self.sha256 = raw, hashlib.sha256(raw).hexdigest()
    self.ids = {}
    for i, p in enumerate(pieces): self.ids.setdefault(p, i)
    def text(i, p):
      if i < 3: return UNK_TEXT.encode() if i == 0 else b""
      return bytes([int(m.group(1), 16)]) if (m := BYTE_PIECE.fullmatch(p)) else p
    self._bytes = [text(i, p) for i, p in enumerate(pieces)]
    self.byte_fallback = len(pieces) >= 259 and all(self._bytes[3 + b] == bytes([b]) for b in range(256))

  def encode(self, text: str, bos: bool = False) -> list[int]:
    ids = []
    if text:
      if (space := self.ids.get(b" ")) is None: raise UserError(f"{self.name} has no ' ' token for run.c's dummy prefix")
      ids.append(space)
    for ch in text:
      b = ch.encode("utf-8", "surrogatepass")
      if (i := self.ids.get(b)) is not None: ids.append(i)
      elif self.byte_fallback: ids += [3 + x for x in b]
      else: raise UserError(f"character {ch!r} is not in {self.name}, which has no byte-fallback tokens")
    return self.merge(([self.bos_id] if bos else []) + ids)  # run.c merges with the BOS in the list too

  def encode_array(self, text: str, bos: bool = False) -> np.ndarray:
    return np.array(self.encode(text, bos), np.uint16 if self.vocab_size <= 1 << 16 else np.uint32)

  def merge(self, ids: list[int]) -> list[int]:
    """run.c's merge loop over a linked list: a heap of candidate pairs keyed by (-score, left position); an entry
    is stale once either side has changed (versions)."""
    n = len(ids)
    nxt, prv, ver, heap = list(range(1, n + 1)), list(range(-1, n - 1)), [0] * n, []
    def push(i):
      j = nxt[i]
      if j < n and (m := self.ids.get(self.pieces[ids[i]] + self.pieces[ids[j]])) is not None and self.scores[m] > np.float32(NEVER_MERGED):
        heapq.heappush(heap, (-float(self.scores[m]), i, ver[i], ver[j], j, m))
    for i in range(n - 1): push(i)
    alive = [True] * n
    while heap:
      _, i, vi, vj, j, m = heapq.heappop(heap)
      if not (alive[i] and alive[j] and nxt[i] == j and ver[i] == vi and ver[j] == vj): continue
      ids[i], ver[i], alive[j] = m, ver[i] + 1, False
      nxt[i] = nxt[j]
      if nxt[j] < n: prv[nxt[j]] = i
      push(i)
      if prv[i] >= 0: push(prv[i])  # the pair on the left: its entry holding i's old version is stale
    return [ids[i] for i in range(n) if alive[i]]

  def token_bytes(self, id: int) -> bytes: return self._bytes[self._check([id])[0]]

  def to_bytes(self) -> bytes:
    """The tokenizer.bin as it was read: a run keeps this copy (its tokenizer.tok) and exports it unchanged."""
    return self.raw

  def save(self, path) -> None: write_atomic(path, self.raw)

  def decode(self, ids) -> str:
    ids = self._check(ids)
    parts = [self._bytes[t][1:] if k and ids[k - 1] == self.bos_id and self._bytes[t][:1] == b" " else self._bytes[t]
             for k, t in enumerate(ids)]
    return b"".join(parts).decode("utf-8", errors="replace")

  def _check(self, ids) -> list[int]:
    ids = [int(i) for i in np.asarray(ids).ravel()]
    if bad := [i for i in ids if not 0 <= i < self.vocab_size]:
      raise UserError(f"token id {bad[0]} is out of range: {self.name} has ids 0..{self.vocab_size - 1}")
    return ids

# *** export ***

def check_exportable(a, tok, version: int) -> None:
  """UserError for a model or tokenizer that run.c (version 0) or runq.c (version 2) cannot run as it is."""
  if a.ffn_bias:
    raise UserError("the model has a bias on w1 (ffn_bias) and llama2.c's run.c has none: train with --ffn_bias=False "
                    "to export it for run.c (or use --format hf)")
  if version == 2 and q8_group_size(a.dim, a.hidden_size) == 1:
    raise UserError(f"dim={a.dim} and FFN hidden size {a.hidden_size} have no common power-of-two factor: Q8_0 groups "
                    "of 1 would be larger than float32 (use --format llama2c, or train with e.g. --multiple_of=32)")
  if not isinstance(tok, RunCTokenizer): tokenizer_pieces(tok)

def write_llama2c(weights: dict[str, np.ndarray], a, tok, out: Path, version: int) -> list[Path]:
  """model.bin (version 0 for run.c, 2 for runq.c) and tokenizer.bin in `out`, from the project's weights (logical
  shapes; output.weight = the unembedding, absent when it is the embedding itself)."""
  check_exportable(a, tok, version)
  c = {"dim": a.dim, "hidden_dim": a.hidden_size, "n_layers": a.n_layers, "n_heads": a.n_heads, "n_kv_heads": a.kv_heads,
       "vocab_size": a.vocab_size, "seq_len": a.max_seq_len}
  if version == 0: weights = {**weights, **dict(zip(("freqs_cos", "freqs_sin"), rope_tables(a.head_dim, a.max_seq_len)))}
  else: log(f"Q8_0 group size {q8_group_size(a.dim, a.hidden_size)}")
  write_atomic(out / "model.bin", model_bin(weights, c, version))
  write_atomic(out / "tokenizer.bin", tokenizer_bin(tok))
  return [out / "model.bin", out / "tokenizer.bin"]
