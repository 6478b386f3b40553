import hashlib, http.server, io, json, re, socket, tarfile, threading
from pathlib import Path
import pytest
from click.testing import CliRunner
from cli import cli
from tinystory import UserError
from tinystory.data import (TINYSTORIES_URL, cache_dir, describe_sources, download, expand_sources, iter_stories,
                            sha256_file, sources_key)

from tinystory.synthetic import synthetic_stories

def raises(msg: str, fn, *args, **kw):
  with pytest.raises(UserError) as e: fn(*args, **kw)
  assert str(e.value) == msg

def stories(*sources, errors="strict") -> list[str]: return list(iter_stories([str(s) for s in sources], errors))

def tar_gz(path, members: dict[str, bytes]):
  with tarfile.open(path, "w:gz") as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return path

def hub_json(*texts) -> bytes: return json.dumps([{"story": t, "instruction": {}} for t in texts]).encode()

# ---- readers ----

def test_hub_json_shard_gives_stripped_stories_and_drops_empty(tmp_path):
  (p := tmp_path / "data00.json").write_bytes(hub_json("  Once upon a time.\nThe end.\n", "", "\n \n", "Tom ran."))
  assert stories(p) == ["Once upon a time.\nThe end.", "Tom ran."]

def test_endoftext_txt_splits_on_marker_lines_only_and_keeps_blank_lines_inside(tmp_path):
  text = "Lily saw a dog.\n\nThe dog ran.\n<|endoftext|>\nTom said <|endoftext|> twice.\n<|endoftext|>\n\n<|endoftext|>\nMax.\n"
  (p := tmp_path / "TinyStories-train.txt").write_text(text)
  assert stories(p) == ["Lily saw a dog.\n\nThe dog ran.", "Tom said <|endoftext|> twice.", "Max."]

def test_plain_txt_is_one_story_per_blank_line_separated_block(tmp_path):
  (p := tmp_path / "mine.txt").write_text("\n\nA cat sat.\nIt was happy.\n\n\n  \nA dog ran.  \n")
  assert stories(p) == ["A cat sat.\nIt was happy.", "A dog ran."]

def test_jsonl_takes_story_or_text_and_skips_blank_lines(tmp_path):
  (p := tmp_path / "s.jsonl").write_text('{"story": " one "}\n\n{"text": "two", "id": 3}\n{"story": ""}\n')
  assert stories(p) == ["one", "two"]

def test_tar_gz_reads_json_members_in_archive_order_and_skips_others(tmp_path, logged):
  p = tar_gz(tmp_path / "all.tar.gz", {"data01.json": hub_json("b1", "b2"), "README": b"hi", "data00.json": hub_json("a1")})
  assert stories(p) == ["b1", "b2", "a1"]
  assert logged == [f"skipping {p}:README: not a .json member"]

def test_directory_reads_known_files_sorted_and_notes_the_rest(tmp_path, logged):
  (tmp_path / "b.txt").write_text("b1\n\nb2")
  (tmp_path / "a.jsonl").write_text('{"story": "a1"}')
  (tmp_path / "notes.md").write_text("not a story")
  (tmp_path / "sub").mkdir()
  (tmp_path / ".unpacked").touch()
  tar_gz(tmp_path / "c.tar.gz", {"data00.json": hub_json("c1")})
  assert stories(tmp_path) == ["a1", "b1", "b2", "c1"]
  assert logged == [f"skipping {tmp_path / 'notes.md'}: not a .txt, .json, .jsonl or .tar.gz file",
                    f"skipping {tmp_path / 'sub'}: not a .txt, .json, .jsonl or .tar.gz file"]

def test_sources_mix_globs_files_and_synthetic_in_the_order_given(tmp_path):
  for name, text in [("x2.txt", "two"), ("x1.txt", "one"), ("y.txt", "why")]: (tmp_path / name).write_text(text)
  got = stories(tmp_path / "y.txt", tmp_path / "x*.txt", "synthetic:3")
  assert got == ["why", "one", "two", *synthetic_stories(3)]
  assert expand_sources([str(tmp_path / "y.txt"), str(tmp_path / "x*.txt"), "synthetic:3"]) == \
         [str(tmp_path / "y.txt"), str(tmp_path / "x1.txt"), str(tmp_path / "x2.txt"), "synthetic:3"]
  assert expand_sources([str(tmp_path / "x*.txt"), "synthetic"]) == [str(tmp_path / "x1.txt"), str(tmp_path / "x2.txt"),
                                                                    "synthetic:4000"]

def test_bad_sources_are_user_errors_naming_them(tmp_path):
  (tmp_path / "notes.md").write_text("x")
  (tmp_path / "empty").mkdir()
  raises(f"data source {tmp_path}/nope.txt does not exist (expected a file, a directory, a glob or synthetic[:N])",
         stories, tmp_path / "nope.txt")
  raises(f"data glob {tmp_path}/*.json matches no .txt, .json, .jsonl or .tar.gz files", stories, tmp_path / "*.json")
  raises(f"data file {tmp_path}/notes.md: unknown layout, expected a .txt, .json, .jsonl or .tar.gz file",
         stories, tmp_path / "notes.md")
  raises(f"data directory {tmp_path}/empty holds no .txt, .json, .jsonl or .tar.gz files", stories, tmp_path / "empty")
  raises("data source 'synthetic:0': expected synthetic:N with N a positive integer", stories, "synthetic:0")
  raises("no data sources given: pass files, directories, globs or synthetic[:N]", stories)
  raises("encoding errors 'ignore': expected one of strict, replace", stories, "synthetic:1", errors="ignore")

def test_malformed_json_names_file_and_char_offset(tmp_path):
  (p := tmp_path / "d.json").write_text('[{"story": "ok"},\n {"story": "bad"')
  raises(f"{p}: invalid JSON at char 34 (line 2, column 17): Expecting ',' delimiter", stories, p)
  (p := tmp_path / "e.json").write_text('[{"story": "ok"}, {"title": "no story"}]')
  raises(f'{p}: record 1: expected an object with a "story" or "text" string', stories, p)
  (p := tmp_path / "f.json").write_text('{"story": "not in a list"}')
  raises(f'{p}: expected a JSON list of objects with a "story" field', stories, p)

def test_malformed_jsonl_and_tar_member_name_their_position(tmp_path):
  (p := tmp_path / "d.jsonl").write_text('{"story": "a"}\n\n{"story": "b",}\n')
  raises(f"{p}: invalid JSON on line 3, column 15: Expecting property name enclosed in double quotes", stories, p)
  (p := tmp_path / "e.jsonl").write_text('{"story": "a"}\n["b"]\n')
  raises(f'{p}: line 2: expected an object with a "story" or "text" string', stories, p)
  p = tar_gz(tmp_path / "t.tar.gz", {"data00.json": hub_json("a"), "data01.json": b"[{]"})
  raises(f"{p}:data01.json: invalid JSON at char 2 (line 1, column 3): Expecting property name enclosed in double quotes",
         stories, p)
  (p := tmp_path / "u.tar.gz").write_bytes(b"not gzip at all")
  with pytest.raises(UserError, match=re.escape(f"{p}: not a readable .tar.gz archive (")): stories(p)

@pytest.mark.parametrize("name, data, offset", [
  ("a.txt", "héllo\n<|endoftext|>\nbye".encode() + b"\xff\n", 24),
  ("b.txt", b"one\n\nt\xc3wo", 6),
  ("c.jsonl", b'{"story": "x"}\n{"story": "\xe9"}\n', 26),
  ("d.json", b'[{"story": "caf\xe9"}]', 15),
])
def test_non_utf8_is_an_error_at_its_byte_offset_unless_replaced(tmp_path, name, data, offset):
  (p := tmp_path / name).write_bytes(data)
  raises(f"{p}: invalid UTF-8 at byte {offset} (fix the file, or read it with `data prepare --encoding-errors replace`, which writes U+FFFD for the bad bytes, and train on its shards)", stories, p)
  assert data[offset] >= 0x80 and "\ufffd" in "".join(stories(p, errors="replace"))

def test_non_utf8_in_an_archive_member_names_the_member(tmp_path):
  p = tar_gz(tmp_path / "t.tar.gz", {"data00.json": b'["\xff"]'})
  raises(f"{p}:data00.json: invalid UTF-8 at byte 2 (fix the file, or read it with `data prepare --encoding-errors replace`, which writes U+FFFD for the bad bytes, and train on its shards)", stories, p)

def test_describe_and_hash_sources(tmp_path):
  (p := tmp_path / "a.txt").write_bytes(b"x" * 3_000_000)
  assert sha256_file(p) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
  synth = hashlib.sha256("\0".join(synthetic_stories(2)).encode()).hexdigest()
  assert describe_sources([str(p), "synthetic:2"]) == [{"path": str(p), "bytes": 3_000_000, "sha256": sha256_file(p)},
                                                       {"synthetic": 2, "sha256": synth}]
  key = sources_key([str(p), "synthetic:2"])
  assert key == sources_key([str(tmp_path / "*.txt"), "synthetic:2"]) != sources_key(["synthetic:2", str(p)])

def test_cache_dir_is_the_env_var_or_data_and_exists(tmp_path, monkeypatch):
  monkeypatch.setenv("TINYSTORY_DATA", str(tmp_path / "a" / "b"))
  assert cache_dir() == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()
  monkeypatch.delenv("TINYSTORY_DATA")
  monkeypatch.chdir(tmp_path)
  assert cache_dir() == Path("data") and (tmp_path / "data").is_dir()

# ---- synthetic ----

def test_synthetic_corpus_is_deterministic_prefix_stable_and_varied():
  a = synthetic_stories(300)
  assert a == synthetic_stories(300) and a[:20] == synthetic_stories(20) and a != synthetic_stories(300, seed=1)
  assert len(set(a)) == 300
  assert all(s.split("\n")[-1].startswith("The moral of the story is ") and s == s.strip() and '"' in s for s in a)
  first_names = {s.split(" named ")[1].split(".")[0] for s in a if " named " in s}
  assert len(first_names) >= 20
  assert len(set(" ".join(a).split())) >= 300

# ---- download ----

class RangeServer(http.server.ThreadingHTTPServer):
  """Serves `payload` at every path with HTTP Range support; can ignore Range or cut a response short."""
  def __init__(self, payload: bytes):
    super().__init__(("127.0.0.1", 0), RangeHandler)
    self.payload, self.ranges, self.ignore_range, self.cut, self.status = payload, [], False, None, None
    self.url = f"http://127.0.0.1:{self.server_address[1]}/TinyStories_all_data.tar.gz"

class RangeHandler(http.server.BaseHTTPRequestHandler):
  def do_GET(self):
    srv, n = self.server, len(self.server.payload)
    srv.ranges.append(self.headers.get("Range"))
    if srv.status: return self.send_error(srv.status)
    m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
    start = int(m.group(1)) if m and not srv.ignore_range else 0
    if start >= n and m:
      self.send_response(416)
      self.send_header("Content-Range", f"bytes */{n}")
      self.send_header("Content-Length", "0")
      self.end_headers()
      return
    self.send_response(206 if start else 200)
    if start: self.send_header("Content-Range", f"bytes {start}-{n - 1}/{n}")
    self.send_header("Content-Length", str(n - start))
    self.end_headers()
    self.wfile.write(srv.payload[start:start + srv.cut] if srv.cut else srv.payload[start:])
  def log_message(self, *args): pass

@pytest.fixture
def hub(tmp_path):
  archive = tar_gz(tmp_path / "src.tar.gz", {"data00.json": hub_json("s1", "s2"), "data01.json": hub_json("s3")})
  srv = RangeServer(archive.read_bytes())
  threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
  yield srv
  srv.shutdown()
  srv.server_close()

def test_download_fetches_verifies_unpacks_once(tmp_path, hub, logged):
  seen = []
  out = download(tmp_path / "cache", url=hub.url, progress=lambda done, total: seen.append((done, total)), timeout=5)
  assert out == tmp_path / "cache" / "TinyStories_all_data" and (out / ".unpacked").exists()
  assert (tmp_path / "cache" / "TinyStories_all_data.tar.gz").read_bytes() == hub.payload
  assert stories(out) == ["s1", "s2", "s3"] and hub.ranges == [None] and seen[-1] == (len(hub.payload),) * 2
  assert download(tmp_path / "cache", url=hub.url, timeout=5) == out and hub.ranges == [None]  # no second request
  assert logged[-1] == f"{out} is already downloaded and unpacked"

def test_download_resumes_a_partial_file_with_a_range_request(tmp_path, hub):
  (tmp_path / "TinyStories_all_data.tar.gz.part").write_bytes(hub.payload[:100])
  out = download(tmp_path, url=hub.url, timeout=5)
  assert hub.ranges == ["bytes=100-"] and (tmp_path / "TinyStories_all_data.tar.gz").read_bytes() == hub.payload
  assert not (tmp_path / "TinyStories_all_data.tar.gz.part").exists() and stories(out) == ["s1", "s2", "s3"]

def test_download_starts_over_when_the_server_ignores_range(tmp_path, hub):
  (tmp_path / "TinyStories_all_data.tar.gz.part").write_bytes(b"garbage" * 10)
  hub.ignore_range = True
  download(tmp_path, url=hub.url, timeout=5)
  assert hub.ranges == ["bytes=70-"] and (tmp_path / "TinyStories_all_data.tar.gz").read_bytes() == hub.payload

def test_download_cut_short_fails_then_resumes_to_the_verified_size(tmp_path, hub):
  hub.cut = 60
  raises(f"download of {hub.url} stopped at 60 of {len(hub.payload)} bytes; run `data download` again to resume",
         download, tmp_path, url=hub.url, timeout=5)
  assert (tmp_path / "TinyStories_all_data.tar.gz.part").read_bytes() == hub.payload[:60]
  hub.cut = None
  download(tmp_path, url=hub.url, timeout=5)
  assert hub.ranges == [None, "bytes=60-"] and (tmp_path / "TinyStories_all_data.tar.gz").read_bytes() == hub.payload

def test_download_of_a_complete_part_file_is_finished_by_a_416(tmp_path, hub):
  (tmp_path / "TinyStories_all_data.tar.gz.part").write_bytes(hub.payload)
  download(tmp_path, url=hub.url, timeout=5)
  assert hub.ranges == [f"bytes={len(hub.payload)}-"]
  assert (tmp_path / "TinyStories_all_data.tar.gz").read_bytes() == hub.payload

def test_download_offline_is_one_line_suggesting_local_data(tmp_path):
  with socket.socket() as s:  # a port nothing listens on
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}/TinyStories_all_data.tar.gz"
  with pytest.raises(UserError) as e: download(tmp_path, url=url, timeout=5)
  msg = str(e.value)
  assert msg.startswith(f"cannot download {url} (") and msg.endswith("); offline? pass story files you have with --data PATH")
  assert "\n" not in msg and not list(tmp_path.glob("*.tar.gz"))

def test_download_drops_a_part_file_longer_than_the_server_file(tmp_path, hub):
  (part := tmp_path / "TinyStories_all_data.tar.gz.part").write_bytes(hub.payload + b"extra")
  raises(f"cannot resume {hub.url}: {part} did not match the file on the server; removed it, run again",
         download, tmp_path, url=hub.url, timeout=5)
  assert not part.exists()

def test_download_reports_http_errors(tmp_path, hub):
  hub.status = 404
  raises(f"cannot download {hub.url}: HTTP 404 Not Found", download, tmp_path, url=hub.url, timeout=5)

def test_cli_download_uses_env_cache_dir_and_default_url(tmp_path, monkeypatch):
  import tinystory.data
  calls = []
  monkeypatch.setattr(tinystory.data, "download", lambda cache_dir, progress=None: calls.append(cache_dir))
  monkeypatch.setenv("TINYSTORY_DATA", str(tmp_path / "env"))
  assert CliRunner().invoke(cli, ["data", "download"]).exit_code == 0
  assert CliRunner().invoke(cli, ["data", "download", "--cache-dir", str(tmp_path / "opt")]).exit_code == 0
  assert calls == [str(tmp_path / "env"), str(tmp_path / "opt")]
  assert TINYSTORIES_URL == "https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/TinyStories_all_data.tar.gz"
