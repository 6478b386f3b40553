import json, random
import numpy as np
import pytest
from click.testing import CliRunner
from cli import cli
from tinystory import UserError, pretok

from tinystory.loader import load_tokenizer
from tinystory.pretok import PretokDataset, check_tokenizer_matches, load_meta, prepare
from tinystory.synthetic import synthetic_stories
from tinystory.tokenizer import fit_tokenizer

STORIES = synthetic_stories(60)  # about 37,000 characters

def raises(msg: str, fn, *args, **kw):
  with pytest.raises(UserError) as e: fn(*args, **kw)
  assert str(e.value) == msg

@pytest.fixture
def corpus(tmp_path):
  """A story file in the TinyStories-train.txt layout and a char tokenizer fitted on it."""
  (src := tmp_path / "stories.txt").write_text("".join(f"{s}\n<|endoftext|>\n" for s in STORIES))
  fit_tokenizer(STORIES, "char").save(tok := tmp_path / "char.tok")
  return src, tok

def shard_ids(d, meta) -> list[np.ndarray]: return [np.fromfile(d / s["file"], np.uint16) for s in meta["shards"]]

def decode_stories(tok, ids: np.ndarray) -> list[str]:
  """Split at BOS and decode: the inverse of BOS-prefixed concatenation."""
  assert ids[0] == tok.bos_id
  return [tok.decode(part[1:].tolist()) for part in np.split(ids, np.flatnonzero(ids == tok.bos_id)[1:])]

# ---- prepare ----

def test_shards_hold_bos_prefixed_stories_val_first_and_meta_counts_them(tmp_path, corpus):
  src, tok_path = corpus
  tok, out = load_tokenizer(tok_path), tmp_path / "shards"
  meta = prepare([str(src)], tok_path, out, val_fraction=0.05, shard_tokens=8000)
  ids = shard_ids(out, meta)
  assert [decode_stories(tok, a) for a in ids][0] == STORIES[:3]  # round(0.05 * 60) stories in val
  assert sum((decode_stories(tok, a) for a in ids), []) == STORIES
  assert np.array_equal(np.concatenate(ids), np.concatenate([tok.encode_array(s, bos=True) for s in STORIES]))
  assert [s["file"] for s in meta["shards"]] == [f"shard_{i:04d}.bin" for i in range(len(ids))] and len(ids) >= 4
  assert [s["tokens"] for s in meta["shards"]] == [len(a) for a in ids] and meta["tokens"] == sum(map(len, ids))
  assert [s["stories"] for s in meta["shards"]] == [len(decode_stories(tok, a)) for a in ids] and meta["stories"] == 60
  for s, a in zip(meta["shards"][1:-1], ids[1:-1]):  # a train shard ends with the story that takes it to shard_tokens
    assert s["tokens"] >= 8000 > s["tokens"] - len(tok.encode_array(decode_stories(tok, a)[-1], bos=True))
  assert (meta["vocab_size"], meta["bos_id"], meta["tokenizer_sha256"]) == (tok.vocab_size, 1, tok.sha256)
  assert meta["tokenizer_path"] == str(tok_path.resolve()) and meta["format"] == 1
  assert meta["sources"] == [{"path": str(src), "bytes": src.stat().st_size, "sha256": meta["sources"][0]["sha256"]}]
  assert load_meta(out) == meta == json.loads((out / "meta.json").read_text())
  assert sorted(p.name for p in out.iterdir()) == ["meta.json"] + [s["file"] for s in meta["shards"]]

@pytest.mark.parametrize("n, fraction, n_val", [(60, 0.02, 1), (60, 0.5, 30), (2, 0.02, 1), (2, 0.9, 1), (60, 0.03, 2)])
def test_val_split_is_the_first_fraction_of_stories_at_least_one_and_leaves_train(tmp_path, n, fraction, n_val):
  fit_tokenizer(STORIES, "char").save(tok := tmp_path / "c.tok")
  meta = prepare([f"synthetic:{n}"], tok, tmp_path / "s", val_fraction=fraction)
  assert [s["stories"] for s in meta["shards"]] == [n_val, n - n_val]

def test_a_pool_of_workers_writes_the_same_shards_as_one_process(tmp_path, corpus, monkeypatch):
  src, tok = corpus
  monkeypatch.setattr(pretok, "CHUNK_STORIES", 7)  # many chunks, so order across workers matters
  one = prepare([str(src)], tok, tmp_path / "one", shard_tokens=5000, workers=1)
  two = prepare([str(src)], tok, tmp_path / "two", shard_tokens=5000, workers=2)
  assert one["shards"] == two["shards"]
  for s in one["shards"]: assert (tmp_path / "one" / s["file"]).read_bytes() == (tmp_path / "two" / s["file"]).read_bytes()

def test_same_inputs_reuse_the_shards_and_different_ones_rebuild(tmp_path, corpus, logged):
  src, tok = corpus
  out = tmp_path / "shards"
  prepare([str(src)], tok, out, shard_tokens=8000)
  mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
  logged.clear()
  prepare([str(tmp_path / "*.txt")], tok, out, shard_tokens=8000)  # the same file by another name
  assert logged == [f"{out} already holds these shards (same sources, tokenizer and options): reusing them"]
  assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes
  meta = prepare([str(src)], tok, out, shard_tokens=20000)  # fewer shards: the stale ones go
  assert sorted(p.name for p in out.iterdir()) == ["meta.json"] + [s["file"] for s in meta["shards"]]
  assert len(meta["shards"]) < len(mtimes) - 1
  src.write_text(src.read_text().replace("Lily", "Lulu"))  # same file, new content
  logged.clear()
  meta = prepare([str(src)], tok, out, shard_tokens=20000)
  assert not any("reusing" in line for line in logged) and "Lulu" in load_tokenizer(tok).decode(
    np.concatenate(shard_ids(out, meta)).tolist())
  fit_tokenizer(STORIES + ["~#~"], "char").save(tok)  # same tokenizer file, new vocabulary
  assert prepare([str(src)], tok, out, shard_tokens=20000)["tokenizer_sha256"] == load_tokenizer(tok).sha256 != \
         meta["tokenizer_sha256"]

def test_a_directory_without_meta_is_rebuilt_not_taken_as_done(tmp_path, corpus, logged):
  src, tok = corpus
  out = tmp_path / "shards"
  meta = prepare([str(src)], tok, out)
  (out / "meta.json").unlink()
  (out / "shard_0007.bin.tmp").write_bytes(b"\0\0")  # left by a killed run
  logged.clear()
  assert prepare([str(src)], tok, out) == meta and not any("reusing" in line for line in logged)
  assert sorted(p.name for p in out.iterdir()) == ["meta.json", "shard_0000.bin", "shard_0001.bin"]

def test_prepare_refuses_bad_options_and_too_little_data(tmp_path, corpus):
  src, tok = corpus
  raises("val fraction 1.0: expected a number between 0 and 1", prepare, [str(src)], tok, tmp_path / "s", val_fraction=1.0)
  raises("shard tokens 0: expected a positive number of tokens", prepare, [str(src)], tok, tmp_path / "s", shard_tokens=0)
  raises("data synthetic:1: 1 stories, need at least 2 (1 val + 1 train)", prepare, ["synthetic:1"], tok, tmp_path / "s")
  raises(f"--out {src} is a file, expected a directory", prepare, [str(src)], tok, src)
  raises(f"tokenizer file {tmp_path}/no.tok does not exist", prepare, [str(src)], tmp_path / "no.tok", tmp_path / "s")

def test_load_meta_and_tokenizer_checks_explain_what_is_wrong(tmp_path, corpus):
  src, tok = corpus
  raises(f"{tmp_path} is not a prepared shard directory (no meta.json); make one with "
         f"`python cli.py data prepare --out {tmp_path} ...`", load_meta, tmp_path)
  meta = prepare([str(src)], tok, tmp_path / "s")
  check_tokenizer_matches(meta, load_tokenizer(tok))
  fit_tokenizer(STORIES + ["~#~"], "char").save(other := tmp_path / "other.tok")
  raises(f"the tokenizer has vocab_size {load_tokenizer(other).vocab_size} but the shards were made with vocab_size "
         f"{meta['vocab_size']} ({tok.resolve()}); use that tokenizer or prepare the data again",
         check_tokenizer_matches, meta, load_tokenizer(other))
  fit_tokenizer(list(reversed(STORIES)) + ["Lily"] * 50, "char").save(same_size := tmp_path / "same.tok")
  t = load_tokenizer(same_size)
  assert t.vocab_size == meta["vocab_size"] and t.sha256 != meta["tokenizer_sha256"]
  raises(f"the tokenizer (sha256 {t.sha256[:16]}) is not the one the shards were made with ({tok.resolve()}, sha256 "
         f"{meta['tokenizer_sha256'][:16]}); use that tokenizer or prepare the data again", check_tokenizer_matches, meta, t)
  with open(tmp_path / "s" / "shard_0001.bin", "r+b") as f: f.truncate(10)
  raises(f"{tmp_path}/s/shard_0001.bin is missing or is not the {meta['shards'][1]['tokens']:,} tokens "
         f"{tmp_path}/s/meta.json says; run data prepare again", load_meta, tmp_path / "s")

def test_cli_prepare_writes_shards_and_reports_bad_input_in_one_line(tmp_path, corpus):
  src, tok = corpus
  r = CliRunner().invoke(cli, ["data", "prepare", "--data", str(src), "--data", "synthetic:5", "--tokenizer", str(tok),
                               "--out", str(tmp_path / "s"), "--val-fraction", "0.1", "--shard-tokens", "9000"])
  assert r.exit_code == 0, r.output
  meta = load_meta(tmp_path / "s")
  assert (meta["stories"], meta["shards"][0]["stories"], meta["val_fraction"], meta["shard_tokens"]) == (65, 6, 0.1, 9000)
  (bad := tmp_path / "bad.txt").write_bytes(b"ok\n\n\xffno")
  r = CliRunner().invoke(cli, ["data", "prepare", "--data", str(bad), "--tokenizer", str(tok), "--out", str(tmp_path / "b")])
  assert r.exit_code == 1 and r.output == f"Error: {bad}: invalid UTF-8 at byte 4 (fix the file, or read it with `data prepare --encoding-errors replace`, which writes U+FFFD for the bad bytes, and train on its shards)\n"
  r = CliRunner().invoke(cli, ["data", "prepare", "--data", str(bad), "--tokenizer", str(tok), "--out", str(tmp_path / "b"),
                               "--encoding-errors", "replace"])
  assert r.exit_code == 0 and load_meta(tmp_path / "b")["stories"] == 2

# ---- batches ----

def llama2c_batches(shard_files, batch_size, max_seq_len, seed=42):
  """The reference: llama2.c's PretokDataset.__iter__ (train split) and DataLoader collation, restated plainly."""
  rng, shards = random.Random(seed), sorted(shard_files)[1:]
  def windows():
    while True:
      rng.shuffle(shards)
      for shard in shards:
        m = np.fromfile(shard, np.uint16).astype(np.int64)
        ixs = list(range(len(m) // max_seq_len - 1))
        rng.shuffle(ixs)
        for ix in ixs: yield m[ix * max_seq_len: ix * max_seq_len + max_seq_len + 1]
  w = windows()
  while True:
    chunk = np.stack([next(w) for _ in range(batch_size)])
    yield chunk[:, :-1], chunk[:, 1:]

@pytest.fixture
def shards(tmp_path, corpus):
  src, tok = corpus
  prepare([str(src)], tok, tmp_path / "s", val_fraction=0.1, shard_tokens=6000)
  return tmp_path / "s"

def take(ds, n): return [ds.next_batch() for _ in range(n)]

def test_train_batches_follow_llama2c_across_shards_and_epochs(shards, logged):
  ds = PretokDataset(shards, "train", batch_size=5, max_seq_len=32)
  assert logged == ["Created a PretokDataset with rng seed 42"]
  ref = llama2c_batches(list(shards.glob("shard_*.bin")), 5, 32)
  n_windows = sum(s["tokens"] // 32 - 1 for s in load_meta(shards)["shards"][1:])
  for x, y in take(ds, 3 * n_windows // 5 + 2):  # three epochs and a bit
    rx, ry = next(ref)
    assert x.dtype == y.dtype == np.int64 and x.shape == y.shape == (5, 32)
    assert np.array_equal(x, rx) and np.array_equal(y, ry)

def test_val_batches_come_from_shard_zero_only(shards):
  val = np.fromfile(shards / "shard_0000.bin", np.uint16)
  for x, y in take(PretokDataset(shards, "val", 4, 16), 20):
    for row_x, row_y in zip(x, y):
      start = next(i for i in range(0, len(val) - 16, 16) if np.array_equal(val[i:i + 16], row_x))
      assert np.array_equal(val[start + 1:start + 17], row_y)

def test_batches_are_a_function_of_the_seed(shards):
  a, b, c = (take(PretokDataset(shards, "train", 3, 16, seed=s), 10) for s in (42, 42, 7))
  assert all(np.array_equal(p[0], q[0]) for p, q in zip(a, b)) and not all(np.array_equal(p[0], q[0]) for p, q in zip(a, c))

@pytest.mark.parametrize("k", [0, 1, 7, 40, 95])
def test_a_restored_state_continues_with_the_same_batches(shards, k):
  ds = PretokDataset(shards, "train", 4, 24)
  take(ds, k)
  state = json.loads(json.dumps(ds.state()))
  expect = take(ds, 60)  # crosses at least one epoch boundary for every k
  used = PretokDataset(shards, "train", 4, 24)
  take(used, 13)
  used.restore(state)
  for resumed in (PretokDataset(shards, "train", 4, 24, state=state), used):
    assert resumed.state() == state
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(expect, take(resumed, 60)))

def test_a_state_from_other_settings_is_refused(shards):
  state = PretokDataset(shards, "train", 4, 24).state()
  raises(f"the data state (split 'train', seed 42, max_seq_len 24) was saved over other settings or shards than these "
         f"(split 'train', seed 42, max_seq_len 16, {shards}); resume with the ones it was saved with",
         PretokDataset, shards, "train", 4, 16, state=state)
  other = dict(state, windows=state["windows"][:-1])  # same settings, shards prepared differently
  with pytest.raises(UserError, match="was saved over other settings or shards"): PretokDataset(shards, "train", 4, 24, state=other)

def test_a_split_too_small_for_one_window_is_an_error(shards):
  val = load_meta(shards)["shards"][0]["tokens"]
  L = val // 2 + 1
  raises(f"{shards}: the val split has {val:,} tokens, too few for one window of max_seq_len+1 = {L + 1} (a shard needs "
         f"at least 2*max_seq_len = {2 * L}); prepare more data or a larger --val-fraction, or use a smaller max_seq_len",
         PretokDataset, shards, "val", 1, L)
  assert PretokDataset(shards, "val", 1, val // 2).next_batch()[0].shape == (1, val // 2)
  raises("split 'test': expected one of train, val, all", PretokDataset, shards, "test", 1, 8)

def test_the_all_split_serves_every_shard(shards):
  meta = load_meta(shards)
  ds = PretokDataset(shards, "all", 1, 8)
  assert ds.shards == meta["shards"] and len(meta["shards"]) > 2
  # an epoch is every window of every shard, once
  seen = sorted(tuple(ds.next_batch()[0][0]) for _ in range(sum(ds.windows)))
  every = [tuple(ids[i * 8:i * 8 + 8]) for s in meta["shards"] for ids in [np.fromfile(shards / s["file"], np.uint16)]
           for i in range(s["tokens"] // 8 - 1)]
  assert seen == sorted(every)
