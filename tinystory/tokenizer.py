"""Tokenizers: a character vocabulary (like the seed's SentencePiece char model) and a byte-level BPE trained here.

Both kinds reserve ids 0, 1, 2 for <unk>, <s> (BOS) and </s> (EOS), as llama2.c's Llama vocabulary does. Specials
never come out of `encode` (a story containing "<s>" is plain text); they decode to nothing, <unk> to '⁇' as
SentencePiece prints it. Ordinary tokens:
  char: the UTF-8 bytes of one character, ids by descending corpus frequency (ties: lower code point first);
        characters outside the vocabulary encode to <unk>.
  bpe:  the 256 single bytes (byte b is id 3+b), then the merges in the order they were learned. Encoding and
        decoding run in tiktoken, whose "rank" is our id: the merge priority.

One file format for both kinds (suggested extension .tok), tiktoken's rank format behind a JSON header line:
  {"format": "tinystory-tokenizer", "version": 1, "kind": ..., "vocab_size": ..., "pattern": ..., "special_tokens": ...}
  <base64 of the token's bytes> <id>      one line per ordinary token, ids 3, 4, ... in order
"""
import base64, collections, hashlib, heapq, json
from pathlib import Path
from typing import Callable, Iterable
import numpy as np
import regex, tiktoken
from tinystory import UserError, create_dirs, remove_created, write_atomic
from tinystory.config import MAX_VOCAB

FORMAT, VERSION, KINDS = "tinystory-tokenizer", 1, ("char", "bpe")
SPECIALS = {"<unk>": 0, "<s>": 1, "</s>": 2}
UNK_ID, BOS_ID, EOS_ID, N_SPECIAL = 0, 1, 2, 3
UNK_TEXT = "\u2047"
MIN_VOCAB = {"char": N_SPECIAL + 1, "bpe": N_SPECIAL + 256}
# cl100k_base's pre-tokenizer: BPE merges never cross these chunks (a word with its leading space, 1-3 digits, a run
# of punctuation, whitespace), so tokens stay word-like and each distinct chunk is counted only once when fitting
PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""

class Tokenizer:
  """A char or bpe vocabulary: `tokens` holds the bytes of the ordinary tokens, ids 3, 4, ... in order."""
  def __init__(self, kind: str, tokens: list[bytes], pattern: str | None = None):
    _check_tokens(kind, tokens, pattern)
    self.kind, self.pattern = kind, pattern
    self.vocab_size, self.bos_id, self.eos_id, self.unk_id = N_SPECIAL + len(tokens), BOS_ID, EOS_ID, UNK_ID
    self._bytes = [UNK_TEXT.encode(), b"", b""] + list(tokens)  # id -> bytes, what decode concatenates
    self.sha256 = hashlib.sha256(self.to_bytes()).hexdigest()
    if kind == "char":
      # lookup table over code points; the extra last entry is <unk>, for every code point past the table's end
      cps = np.array([ord(t.decode()) for t in tokens], np.int64)
      self._lut = np.full(cps.max() + 2, UNK_ID, np.uint16)
      self._lut[cps] = np.arange(N_SPECIAL, self.vocab_size)
    else:
      ranks = {t: i for i, t in enumerate(self._bytes[N_SPECIAL:], N_SPECIAL)}
      self._enc = tiktoken.Encoding(f"tinystory-bpe-{self.sha256[:12]}", pat_str=pattern, mergeable_ranks=ranks,
                                    special_tokens=SPECIALS)

  def encode_array(self, text: str, bos: bool = False) -> np.ndarray:
    """uint16 ids of `text` (BOS first if `bos`): the fast path for pretokenizing a corpus."""
    if self.kind == "char":
      cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
      ids = self._lut[np.minimum(cps, len(self._lut) - 1)]
    else: ids = self._enc.encode_to_numpy(text, disallowed_special=()).astype(np.uint16)
    return np.concatenate((np.array([BOS_ID], np.uint16), ids)) if bos else ids

  def encode(self, text: str, bos: bool = False) -> list[int]: return self.encode_array(text, bos).tolist()

  def decode(self, ids) -> str:
    # a table join rather than tiktoken's decode: tiktoken would spell the specials out ("<s>")
    return b"".join([self._bytes[i] for i in self._check_ids(ids)]).decode("utf-8", errors="replace")

  def token_bytes(self, id: int) -> bytes: return self._bytes[self._check_ids([id])[0]]

  def to_bytes(self) -> bytes:
    """The canonical file contents; `sha256` is their digest."""
    header = {"format": FORMAT, "version": VERSION, "kind": self.kind, "vocab_size": self.vocab_size,
              "pattern": self.pattern, "special_tokens": SPECIALS}
    lines = [json.dumps(header)] + [f"{base64.b64encode(t).decode()} {i}" for i, t in enumerate(self._bytes) if i >= N_SPECIAL]
    return ("\n".join(lines) + "\n").encode()

  def save(self, path) -> None:
    """Write the file atomically (write_atomic), creating its directory."""
    path = Path(path)
    created = create_dirs(path.parent, "the tokenizer file's directory")
    try: write_atomic(path, self.to_bytes())
    except BaseException:
      remove_created(created)  # no empty directory left behind
      raise

  def _check_ids(self, ids) -> list[int]:
    a = np.asarray(ids)
    if a.size == 0: return []
    if a.dtype.kind not in "iu": raise UserError(f"token ids must be integers, got {a.ravel()[0].item()!r}")
    if a.min() < 0 or a.max() >= self.vocab_size:
      bad = a.min() if a.min() < 0 else a.max()
      raise UserError(f"token id {bad} is out of range: this {self.kind} tokenizer has ids 0..{self.vocab_size - 1}")
    return a.ravel().tolist()

def _check_tokens(kind: str, tokens: list[bytes], pattern: str | None) -> None:
  """ValueError for a vocabulary that cannot be (loading turns it into a UserError naming the file)."""
  if kind not in KINDS: raise ValueError(f"unknown tokenizer kind {kind!r} (expected 'char' or 'bpe')")
  if not MIN_VOCAB[kind] <= N_SPECIAL + len(tokens) <= MAX_VOCAB:
    raise ValueError(f"{kind} vocab size {N_SPECIAL + len(tokens)} is outside {MIN_VOCAB[kind]}..{MAX_VOCAB}")
  if len(set(tokens)) != len(tokens): raise ValueError("a token appears twice")
  if kind == "char":
    if pattern is not None: raise ValueError("a char tokenizer has no pattern (it must be null)")
    for t in tokens:
      try: ok = len(t.decode()) == 1
      except UnicodeDecodeError: ok = False
      if not ok: raise ValueError(f"char token {t!r} is not the UTF-8 of one character")
  else:
    # the pattern must match all of any text: one that skips some characters makes encode drop them, silently
    if pattern != PATTERN: raise ValueError("its pattern is not the bpe pre-tokenizer pattern this version writes")
    if set(tokens[:256]) != {bytes([b]) for b in range(256)}: raise ValueError("bpe ids 3..258 must be the 256 single bytes")
    if not all(len(t) > 1 for t in tokens[256:]): raise ValueError("bpe merge tokens must be at least 2 bytes")

def looks_like_tokenizer_bin(raw: bytes) -> bool:
  """A tokenizer.bin begins with the longest token's length, an int32 in 1..65536: its high bytes are NUL, which no
  text file has."""
  return len(raw) >= 8 and 0 < int.from_bytes(raw[:4], "little") <= 1 << 16

def tokenizer_format(raw: bytes, path) -> str:
  """Which tokenizer file `raw` is, by its contents: "tok" (this project's .tok, or a text file meant as one),
  "json" (a Hugging Face tokenizer.json: a JSON object in a .json file) or "bin" (llama2.c's tokenizer.bin: binary,
  its first int32 the longest token's length)."""
  if raw.startswith(b'{"format"'): return "tok"
  if looks_like_tokenizer_bin(raw): return "bin"
  if raw.lstrip().startswith(b"{") and Path(path).suffix == ".json": return "json"
  try: raw.decode()
  except UnicodeDecodeError: return "bin"
  return "tok"

def parse_tok(raw: bytes, path) -> Tokenizer:
  """The Tokenizer of a .tok file's bytes."""
  def corrupt(what: str) -> UserError: return UserError(f"{path} is not a valid tokenizer file: {what}")
  try: lines = raw.decode().split("\n")
  except UnicodeDecodeError as e: raise corrupt(f"not UTF-8 text (byte {e.start})") from None
  try: header = json.loads(lines[0])
  except ValueError: header = None
  if not isinstance(header, dict) or header.get("format") != FORMAT:
    raise corrupt(f'its first line is not a JSON header with "format": "{FORMAT}"')
  if header.get("version") != VERSION:
    raise UserError(f"{path}: tokenizer format version {header.get('version')!r} is not supported (expected {VERSION})")
  if (kind := header.get("kind")) not in KINDS:
    raise UserError(f"{path}: unknown tokenizer kind {kind!r} (expected 'char' or 'bpe')")
  if header.get("special_tokens") != SPECIALS: raise corrupt(f"special_tokens must be {json.dumps(SPECIALS)}")
  body = lines[1:-1] if lines[-1] == "" else lines[1:]
  if header.get("vocab_size") != N_SPECIAL + len(body):
    raise corrupt(f"the header says vocab_size {header.get('vocab_size')!r} but the file has {N_SPECIAL + len(body)} tokens")
  tokens = []
  for n, line in enumerate(body, 2):
    try:
      b64, id = line.split(" ")
      tokens.append(base64.b64decode(b64, validate=True))
      ok = int(id) == n + 1
    except ValueError: ok = False
    if not ok: raise corrupt(f"line {n} should be '<base64 bytes> {n + 1}', got {line[:60]!r}")
  try: return Tokenizer(kind, tokens, header.get("pattern"))
  except ValueError as e: raise corrupt(str(e)) from None

# ---- fitting ----

def fit_tokenizer(stories: Iterable[str], kind: str, vocab_size: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Tokenizer:
  """Learn a `kind` vocabulary of `vocab_size` tokens (specials included) from `stories`.
  char: vocab_size None means every distinct character. bpe: vocab_size is required; `progress(merges_done, merges)`."""
  if kind not in KINDS: raise UserError(f"unknown tokenizer kind {kind!r} (expected 'char' or 'bpe')")
  if vocab_size is not None and vocab_size > MAX_VOCAB:
    raise UserError(f"vocab size {vocab_size} is too large: at most {MAX_VOCAB} (shards store token ids as uint16)")
  if vocab_size is None and kind == "bpe": raise UserError(f"bpe needs a vocab size (at least {MIN_VOCAB['bpe']})")
  if vocab_size is not None and vocab_size < MIN_VOCAB[kind]:
    raise UserError(f"{kind} vocab size {vocab_size} is too small: at least {MIN_VOCAB[kind]} "
                    f"(<unk>, <s>, </s>{' and the 256 bytes' if kind == 'bpe' else ' and one character'})")
  return _fit_char(stories, vocab_size) if kind == "char" else _fit_bpe(stories, vocab_size, progress)

def _fit_char(stories: Iterable[str], vocab_size: int | None) -> Tokenizer:
  counts = collections.Counter()
  for s in stories: counts.update(s)
  if not counts: raise UserError("no text to fit a tokenizer on: the data holds no stories")
  chars = sorted(counts, key=lambda c: (-counts[c], ord(c)))
  most = N_SPECIAL + len(chars)
  if vocab_size is None and most > MAX_VOCAB:
    raise UserError(f"the data has {len(chars)} distinct characters: give a char vocab size of at most {MAX_VOCAB}")
  if vocab_size is not None and vocab_size > most:
    raise UserError(f"char vocab size {vocab_size} is too large: the data has {len(chars)} distinct characters, "
                    f"so at most {most} (with <unk>, <s>, </s>)")
  return Tokenizer("char", [c.encode() for c in chars[:(vocab_size or most) - N_SPECIAL]])

def _fit_bpe(stories: Iterable[str], vocab_size: int, progress=None) -> Tokenizer:
  split, chunks = regex.compile(PATTERN).findall, collections.Counter()
  for s in stories: chunks.update(split(s))
  if not chunks: raise UserError("no text to fit a tokenizer on: the data holds no stories")
  vocab = [b""] * N_SPECIAL + [bytes([b]) for b in range(256)]
  words = [[N_SPECIAL + b for b in c.encode()] for c in chunks]
  learn_merges(words, list(chunks.values()), vocab, vocab_size, progress)
  if len(vocab) < vocab_size:
    raise UserError(f"bpe vocab size {vocab_size} is too large: the data allows only {len(vocab)} tokens "
                    f"(every pair of adjacent tokens is already merged)")
  return Tokenizer("bpe", vocab[N_SPECIAL:], PATTERN)

def learn_merges(words: list[list[int]], freqs: list[int], vocab: list[bytes], vocab_size: int, progress=None) -> None:
  """Grow `vocab` (token bytes by id) to `vocab_size` by merging the most frequent adjacent pair of ids in `words`
  (each seen `freqs` times), ties to the smallest pair of ids; `words` are rewritten in place.
  Pair counts are updated incrementally: a merge re-counts only the words that contain the merged pair."""
  counts, where = collections.Counter(), collections.defaultdict(set)  # pair -> occurrences, pair -> word indices
  for w, (word, f) in enumerate(zip(words, freqs)):
    for pair in zip(word, word[1:]): counts[pair] += f; where[pair].add(w)
  heap = [(-c, pair) for pair, c in counts.items()]  # max-heap of counts; stale entries are skipped when popped
  heapq.heapify(heap)
  id_of, start = {t: i for i, t in enumerate(vocab)}, len(vocab)
  while len(vocab) < vocab_size and (pair := _pop_most_frequent(heap, counts)):
    a, b = pair
    merged = vocab[a] + vocab[b]
    # two different pairs can spell the same bytes ("ab"+"c", "a"+"bc"): reuse the token, the id stays unique
    if (new := id_of.get(merged)) is None: new = id_of[merged] = len(vocab); vocab.append(merged)
    delta = collections.Counter()
    for w in where.pop(pair):
      word, f = words[w], freqs[w]
      if len(out := _merge_pair(word, a, b, new)) == len(word): continue  # stale index: the pair left this word earlier
      for p in zip(word, word[1:]): delta[p] -= f
      for p in zip(out, out[1:]): delta[p] += f; where[p].add(w)
      words[w] = out
    for p, d in delta.items():
      if d == 0: continue
      if (c := counts[p] + d) > 0: counts[p] = c; heapq.heappush(heap, (-c, p))
      else: del counts[p]
    if progress: progress(len(vocab) - start, vocab_size - start)

def _pop_most_frequent(heap: list, counts: collections.Counter) -> tuple[int, int] | None:
  while heap:
    c, pair = heapq.heappop(heap)
    if counts.get(pair) == -c: return pair
  return None

def _merge_pair(word: list[int], a: int, b: int, new: int) -> list[int]:
  out, i, n = [], 0, len(word)
  while i < n:
    if word[i] == a and i + 1 < n and word[i + 1] == b: out.append(new); i += 2
    else: out.append(word[i]); i += 1
  return out
