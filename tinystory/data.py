"""Story sources: every TinyStories layout (and the built-in synthetic corpus) read as one stream of stories, and the
download of the hub archive llama2.c uses.

A source is a file, a directory (its .txt .json .jsonl .tar.gz files, sorted), a glob, or `synthetic[:N]`. Layouts:
- .json: a JSON list of objects with a "story" (or "text") field, as the hub's data00.json ... shards;
- .jsonl: one such object per line;
- .txt: stories separated by lines `<|endoftext|>` (TinyStories-train.txt, TinyStoriesV2-GPT4-*.txt) if the file has
  any, otherwise by blank lines (one story per paragraph);
- .tar.gz: the hub archive, its .json members in archive order.
Stories are stripped of surrounding whitespace and empty ones dropped, as llama2.c does before encoding.
"""
import glob, hashlib, http.client, json, os, re, shutil, tarfile, urllib.error, urllib.request, zlib
from pathlib import Path
from typing import Callable, Iterator
from tinystory import UserError
from tinystory.log import log
from tinystory.synthetic import synthetic_stories

TINYSTORIES_URL = "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStories_all_data.tar.gz"
SUFFIXES = (".tar.gz", ".jsonl", ".json", ".txt")
KNOWN = ".txt, .json, .jsonl or .tar.gz"
END_OF_TEXT = "<|endoftext|>"
SYNTHETIC_STORIES = 4000  # `synthetic` alone: about 2.5M characters
ENCODING_ERRORS = ("strict", "replace")

# ---- sources ----

def source_list(option: str) -> list[str]:
  """The sources of a comma-separated option (--data, --val_data), empty parts dropped."""
  return [s for s in option.split(",") if s]

def parse_synthetic(source: str) -> int | None:
  """The story count of a `synthetic` / `synthetic:N` source, None for a path."""
  if source == "synthetic": return SYNTHETIC_STORIES
  if not source.startswith("synthetic:"): return None
  n = source.removeprefix("synthetic:")
  if not n.isdigit() or int(n) < 1: raise UserError(f"data source {source!r}: expected synthetic:N with N a positive integer")
  return int(n)

def _suffix(path: Path) -> str | None: return next((s for s in SUFFIXES if path.name.endswith(s)), None)

def _dir_files(d: Path) -> list[Path]:
  files = []
  for p in sorted(d.iterdir()):
    if p.name.startswith("."): continue  # markers and editor files, never stories
    if p.is_file() and _suffix(p): files.append(p)
    else: log(f"skipping {p}: not a {KNOWN} file")
  if not files: raise UserError(f"data directory {d} holds no {KNOWN} files")
  return files

def _expand(source: str) -> list[Path]:
  p = Path(source)
  if p.is_dir(): return _dir_files(p)
  if p.is_file():
    if _suffix(p) is None: raise UserError(f"data file {p}: unknown layout, expected a {KNOWN} file")
    return [p]
  if not glob.has_magic(source): raise UserError(f"data source {source} does not exist (expected a file, a directory, a glob or synthetic[:N])")
  files = []
  for m in map(Path, sorted(glob.glob(source))):
    if m.is_dir(): files += _dir_files(m)
    elif _suffix(m): files.append(m)
    else: log(f"skipping {m}: not a {KNOWN} file")
  if not files: raise UserError(f"data glob {source} matches no {KNOWN} files")
  return files

def _plan(sources: list[str]) -> list[int | Path]:
  """Every source expanded, in order: a story count for synthetic ones, a Path for each file. Checks all up front."""
  if not sources: raise UserError("no data sources given: pass files, directories, globs or synthetic[:N]")
  plan = []
  for s in sources:
    n = parse_synthetic(str(s))
    plan += [n] if n is not None else _expand(str(s))
  return plan

def expand_sources(sources: list[str]) -> list[str]:
  """The sources with directories and globs expanded to their files (skip notes are logged here, once), synthetic
  ones kept: the same stories as `sources`, cheap to read again."""
  return [str(p) if isinstance(p, Path) else f"synthetic:{p}" for p in _plan(sources)]

def sha256_file(path, chunk: int = 1 << 20) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while b := f.read(chunk): h.update(b)
  return h.hexdigest()

def describe_sources(sources: list[str]) -> list[dict]:
  """What was read, in order, for meta files: {path, bytes, sha256} per file, {synthetic, sha256} per synthetic
  source (the hash of its text, so a change to the templates reads as a change of data)."""
  out = []
  for p in _plan(sources):
    if isinstance(p, Path): out.append({"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    else: out.append({"synthetic": p, "sha256": hashlib.sha256("\0".join(synthetic_stories(p)).encode()).hexdigest()})
  return out

def sources_key(sources: list[str]) -> str:
  """A content hash of the sources (file bytes and synthetic text, in order): names a cache of what was made from them."""
  return hashlib.sha256(json.dumps([d["sha256"] for d in describe_sources(sources)]).encode()).hexdigest()

def cache_dir() -> Path:
  """Where downloads and derived data go, created if missing: $TINYSTORY_DATA, else data/ (in the working directory)."""
  (d := Path(os.environ.get("TINYSTORY_DATA") or "data")).mkdir(parents=True, exist_ok=True)
  return d

# ---- readers ----

def _decode(data: bytes, where: str, offset: int, errors: str) -> str:
  try: return data.decode("utf-8", errors=errors)
  except UnicodeDecodeError as e:
    # only `tokenizer fit` and `data prepare` have the option; train and eval take the shards data prepare makes
    raise UserError(f"{where}: invalid UTF-8 at byte {offset + e.start} (fix the file, or read it with `data prepare "
                    "--encoding-errors replace`, which writes U+FFFD for the bad bytes, and train on its shards)") from None

def _story_of(record, where: str) -> str:
  story = record.get("story", record.get("text")) if isinstance(record, dict) else None
  if not isinstance(story, str): raise UserError(f"{where}: expected an object with a \"story\" or \"text\" string")
  return story

def _json_stories(data: bytes, where: str, errors: str) -> Iterator[str]:
  try: records = json.loads(_decode(data, where, 0, errors))
  except json.JSONDecodeError as e:
    raise UserError(f"{where}: invalid JSON at char {e.pos} (line {e.lineno}, column {e.colno}): {e.msg}") from None
  if not isinstance(records, list): raise UserError(f"{where}: expected a JSON list of objects with a \"story\" field")
  for i, r in enumerate(records): yield _story_of(r, f"{where}: record {i}")

def _jsonl_stories(path: Path, errors: str) -> Iterator[str]:
  with open(path, "rb") as f:
    offset = 0
    for lineno, raw in enumerate(f, 1):
      line = _decode(raw, str(path), offset, errors)
      offset += len(raw)
      if not line.strip(): continue
      try: record = json.loads(line)
      except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON on line {lineno}, column {e.colno}: {e.msg}") from None
      yield _story_of(record, f"{path}: line {lineno}")

def _has_end_of_text_line(path: Path) -> bool:
  eot = END_OF_TEXT.encode()
  with open(path, "rb") as f: return any(line.strip() == eot for line in f)

def _txt_stories(path: Path, errors: str) -> Iterator[str]:
  by_eot = _has_end_of_text_line(path)
  with open(path, "rb") as f:
    offset, lines = 0, []
    for raw in f:
      line = _decode(raw, str(path), offset, errors)
      offset += len(raw)
      if (line.strip() == END_OF_TEXT) if by_eot else not line.strip():
        yield "".join(lines)
        lines = []
      else: lines.append(line)
    yield "".join(lines)

def _tar_stories(path: Path, errors: str) -> Iterator[str]:
  try:
    with tarfile.open(path, "r|gz") as tar:  # a stream: one pass over the 1.5 GB archive, no seeks
      for member in tar:
        if not member.isfile(): continue
        if not member.name.endswith(".json"):
          log(f"skipping {path}:{member.name}: not a .json member")
          continue
        yield from _json_stories(tar.extractfile(member).read(), f"{path}:{member.name}", errors)
  except (tarfile.TarError, zlib.error, EOFError, OSError) as e:
    raise UserError(f"{path}: not a readable .tar.gz archive ({e})") from None

READERS = {".json": lambda p, errors: _json_stories(p.read_bytes(), str(p), errors), ".jsonl": _jsonl_stories,
           ".txt": _txt_stories, ".tar.gz": _tar_stories}

def read_stories(path, errors: str = "strict") -> Iterator[str]:
  """The raw stories of one file, by its layout (see the module docstring)."""
  path = Path(path)
  return READERS[_suffix(path)](path, errors)

def iter_stories(sources: list[str], errors: str = "strict") -> Iterator[str]:
  """Every story of every source, in order, stripped, empty ones dropped. `errors`: what to do with bytes that are not
  UTF-8, "strict" (UserError naming file and byte offset) or "replace" (U+FFFD)."""
  if errors not in ENCODING_ERRORS: raise UserError(f"encoding errors {errors!r}: expected one of {', '.join(ENCODING_ERRORS)}")
  for p in _plan(sources):
    for story in read_stories(p, errors) if isinstance(p, Path) else synthetic_stories(p):
      if story := story.strip(): yield story

# ---- download ----

def _total_from_content_range(value: str | None) -> int | None:
  m = re.fullmatch(r"bytes (?:\d+-\d+|\*)/(\d+)", (value or "").strip())
  return int(m.group(1)) if m else None

def _fetch(url: str, dest: Path, progress: Callable | None, timeout: float) -> None:
  """Download url to dest via dest.part, resuming the .part with an HTTP Range request if one is there."""
  part = dest.with_name(dest.name + ".part")
  have = part.stat().st_size if part.exists() else 0
  total = None
  try:
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {}),
                                timeout=timeout) as resp:
      if have and resp.status == 206:
        if not (resp.headers.get("Content-Range") or "").startswith(f"bytes {have}-"):
          raise UserError(f"cannot resume {url}: the server sent range {resp.headers.get('Content-Range')!r}, "
                          f"expected bytes from {have}; delete {part} and run again")
        total, mode = _total_from_content_range(resp.headers.get("Content-Range")), "ab"
        log(f"Resuming {url} at byte {have:,}")
      else:  # a fresh download, or a server that ignores Range: start over
        length = resp.headers.get("Content-Length")
        have, total, mode = 0, int(length) if length else None, "wb"
        log(f"Downloading {url} to {dest}")
      with open(part, mode) as f:
        while chunk := resp.read(1 << 20):
          f.write(chunk)
          have += len(chunk)
          if progress: progress(have, total)
  except urllib.error.HTTPError as e:
    if e.code != 416 or not have: raise UserError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    total = _total_from_content_range(e.headers.get("Content-Range"))  # 416: the .part may already be whole
    if total != have:
      part.unlink()
      raise UserError(f"cannot resume {url}: {part} did not match the file on the server; removed it, run again") from None
  except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
    reason = getattr(e, "reason", None) or e
    raise UserError(f"cannot download {url} ({reason}); offline? pass story files you have with --data PATH") from None
  if total is not None and have != total:
    raise UserError(f"download of {url} stopped at {have:,} of {total:,} bytes; run `data download` again to resume")
  os.replace(part, dest)

def _unpack(archive: Path, out: Path) -> None:
  log(f"Unpacking {archive} to {out}")
  tmp = out.with_name(out.name + ".tmp")
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    with tarfile.open(archive, "r:gz") as tar: tar.extractall(tmp, filter="data")
  except (tarfile.TarError, zlib.error, EOFError, OSError) as e:
    raise UserError(f"{archive}: cannot unpack ({e}); delete it and run `data download` again") from None
  shutil.rmtree(out, ignore_errors=True)  # a copy from an unpack that died before its marker
  os.replace(tmp, out)
  (out / ".unpacked").touch()

def download(cache_dir="data", url: str = TINYSTORIES_URL, progress: Callable | None = None, timeout: float = 60.0) -> Path:
  """Fetch the TinyStories hub archive into cache_dir and unpack it once; returns the directory of its JSON shards.
  `progress(bytes_done, bytes_total_or_None)` is called as it downloads. Interrupted downloads resume."""
  cache = Path(cache_dir)
  archive = cache / url.rsplit("/", 1)[-1]
  out = cache / archive.name.removesuffix(".tar.gz")
  if (out / ".unpacked").exists():
    log(f"{out} is already downloaded and unpacked")
    return out
  cache.mkdir(parents=True, exist_ok=True)
  if archive.exists(): log(f"{archive} is already downloaded")
  else: _fetch(url, archive, progress, timeout)
  _unpack(archive, out)
  log(f"Done: {len(list(out.glob('*.json')))} JSON shards in {out}; use --data {out}")
  return out
