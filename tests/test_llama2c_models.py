"""Published llama2.c models end to end, on a tiny model.bin and tokenizer.bin that the tests write (no download):
the tokenizer.bin in every command, shards as llama2.c pretokenizes TinyStories, fine-tuning from the .bin and back
to a .bin, text as run.c prints it, eval's counts of the text."""
import json, random, struct
from pathlib import Path
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st
from cli import cli
from tinystory import UserError
from tinystory.llama2c import model_bin, read_tokenizer_bin
from tinystory.loader import load_tokenizer
from tinystory.model import rope_tables

STORIES = ["Once upon a time there was a cat. The cat liked milk.", "Tom had a red ball. He threw it high!",
           "Lily saw a big dog; the dog was happy.", "The end came soon. Café au lait, naïve!"]
MERGES = [b" t", b"th", b" th", b"he", b" the", b" a", b"at", b" c", b" cat", b"on", b"ce", b" O", b"an"]
SEQ_LEN = 32
COPIES = 40  # the story file: enough tokens for a val split of one window

def write_tokenizer_bin(path: Path) -> bytes:
  """A SentencePiece-style tokenizer.bin as llama2.c's tokenizer.py writes it: <unk>, BOS, EOS, the 256 <0xXX> byte
  pieces, every ASCII letter and punctuation of the stories, then merges (higher score: merged first)."""
  chars = sorted({c for s in STORIES for c in s if ord(c) < 128} | {" "})
  pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % b for b in range(256)] + [c.encode() for c in chars] + MERGES
  scores = [0.0] * 3 + [0.0] * 256 + [-1.0] * len(chars) + [float(i) for i in range(len(MERGES))]
  raw = struct.pack("<i", max(map(len, pieces))) + b"".join(struct.pack("<fi", s, len(p)) + p for s, p in zip(scores, pieces))
  path.write_bytes(raw)
  return raw

@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """model.bin (version 0, shared classifier, random weights) and tokenizer.bin side by side, and a story file."""
  d = tmp_path_factory.mktemp("llama2c")
  raw_tok = write_tokenizer_bin(d / "tokenizer.bin")
  V, dim, hidden, L, H = read_tokenizer_bin(d / "tokenizer.bin").vocab_size, 16, 32, 1, 2
  rng = np.random.default_rng(0)
  w = {"tok_embeddings.weight": rng.normal(0, 1, (V, dim)), "norm.weight": np.ones(dim)}
  for i in range(L):
    w |= {f"layers.{i}.attention_norm.weight": np.ones(dim), f"layers.{i}.ffn_norm.weight": np.ones(dim)}
    for n, shape in (("attention.wq", (dim, dim)), ("attention.wk", (dim, dim)), ("attention.wv", (dim, dim)),
                     ("attention.wo", (dim, dim)), ("feed_forward.w1", (hidden, dim)), ("feed_forward.w2", (dim, hidden)),
                     ("feed_forward.w3", (hidden, dim))):
      w[f"layers.{i}.{n}.weight"] = rng.normal(0, 0.3, shape)
  w = {k: v.astype(np.float32) for k, v in w.items()}
  w |= dict(zip(("freqs_cos", "freqs_sin"), rope_tables(dim // H, SEQ_LEN)))
  c = dict(dim=dim, hidden_dim=hidden, n_layers=L, n_heads=H, n_kv_heads=H, vocab_size=V, seq_len=SEQ_LEN)
  (d / "model.bin").write_bytes(model_bin(w, c, 0))
  (d / "stories.txt").write_text("\n<|endoftext|>\n".join(STORIES * COPIES) + "\n", encoding="utf-8")
  return {"dir": d, "model": d / "model.bin", "tok": d / "tokenizer.bin", "raw_tok": raw_tok, "text": d / "stories.txt"}

def invoke(*args):
  res = CliRunner().invoke(cli, [str(a) for a in args])
  return res

@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch): monkeypatch.setenv("TINYSTORY_DATA", str(tmp_path / "cache"))

# *** the tokenizer.bin wherever a tokenizer is taken ***

def test_tokenizer_commands_take_a_tokenizer_bin(files):
  tok = read_tokenizer_bin(files["tok"])
  res = invoke("tokenizer", "info", files["tok"])
  assert res.exit_code == 0, res.output
  assert "kind: llama2c" in res.output and f"vocab_size: {tok.vocab_size} (3 specials + 256 byte-fallback pieces + " in res.output
  res = invoke("tokenizer", "encode", "--tokenizer", files["tok"], "--bos", "Once the cat")
  ids = [int(i) for i in res.output.split()]
  assert res.exit_code == 0 and ids == tok.encode("Once the cat", bos=True)
  assert [tok.pieces[i] for i in ids] == [b"\n<s>\n", b" O", b"n", b"ce", b" the", b" cat"]  # the dummy prefix merged in
  res = invoke("tokenizer", "decode", "--tokenizer", files["tok"], *ids)
  assert res.exit_code == 0 and res.output == "Once the cat\n"  # the space after BOS is dropped, as run.c prints

def test_runc_encoding_rules_leading_spaces_non_ascii_and_byte_fallback(files):
  tok = read_tokenizer_bin(files["tok"])
  sp = tok.ids[b" "]
  # leading spaces: the dummy prefix is one more ' ' before them, and ' ' + 't' merges as in any word
  assert tok.encode("  the") == [sp, sp, tok.ids[b" the"]]
  # 'é' has no piece: its two UTF-8 bytes by byte fallback (ids byte + 3); the text comes back whole
  assert tok.encode("é") == [sp, 3 + 0xC3, 3 + 0xA9]
  for text in ("  the", "é", "naïve Café €!", " Once"):
    assert tok.decode(tok.encode(text, bos=True)) == text

def test_data_prepare_with_a_tokenizer_bin_is_llama2c_pretokenization(files, tmp_path):
  out = tmp_path / "shards"
  res = invoke("data", "prepare", "--data", files["text"], "--tokenizer", files["tok"], "--out", out, "--val-fraction", "0.25")
  assert res.exit_code == 0, res.output
  tok = read_tokenizer_bin(files["tok"])
  meta = json.loads((out / "meta.json").read_text())
  ids = np.concatenate([np.fromfile(out / s["file"], np.uint16) for s in meta["shards"]]).tolist()
  # llama2.c's pretokenize: each story stripped, encoded with BOS and SentencePiece's dummy prefix, no EOS
  want = [i for s in STORIES * COPIES for i in tok.encode(s.strip(), bos=True)]
  assert ids == want and meta["tokenizer_sha256"] == tok.sha256

@pytest.mark.slow
def test_eval_counts_the_texts_characters_not_the_dummy_prefix(files):
  res = invoke("eval", "--checkpoint", files["model"], "--data", files["text"], "--json")
  assert res.exit_code == 0, res.output
  out = json.loads(res.output.strip().splitlines()[-1])
  stories = STORIES * COPIES
  assert out["chars"] == sum(len(s) for s in stories) and out["bytes"] == sum(len(s.encode()) for s in stories)

# *** text as run.c prints it ***

def test_sample_after_bos_prints_no_dummy_prefix_space(files):
  from tinystory.loader import load_model_file
  from tinystory.sample import CachedDecoder, generate
  res = invoke("sample", "--checkpoint", files["model"], "--start", "", "--temperature=0", "--max_new_tokens=40",
               "--no-preamble")
  assert res.exit_code == 0, res.output
  model, tok = load_model_file(files["model"])
  greedy = list(generate(CachedDecoder(model), [tok.bos_id], 40, lambda lg: int(np.argmax(lg))))
  # run.c's decode of [BOS] + the greedy ids, a generated BOS as a blank line: the space after each BOS dropped
  text, prev = "", tok.bos_id
  for t in greedy:
    piece = tok.token_bytes(t)
    if prev == tok.bos_id and piece[:1] == b" ": piece = piece[1:]
    text += piece.decode("utf-8", "replace") + ("\n\n" if t == tok.bos_id else "")
    prev = t
  assert res.output == text + "\n---------------\n"

def test_text_stream_drops_the_space_after_each_bos(files):
  from tinystory.sample import TextStream
  tok, out = read_tokenizer_bin(files["tok"]), []
  stream = TextStream(tok, out.append, prev=tok.bos_id)
  for t in (tok.ids[b" the"], tok.ids[b" cat"], tok.bos_id, tok.ids[b" O"], tok.ids[b"n"]): stream.put(t)
  assert "".join(out) == "the cat\n\nOn"

# *** fine-tuning a published model on its own vocabulary, and back to a .bin ***

EVAL = ["--eval_iters=20", "--batch_size=2", "--dropout=0.0"]

def val_losses(output: str) -> list[float]: return [float(l.split("val loss ")[1]) for l in output.splitlines() if " val loss " in l]

@pytest.fixture(scope="module")
def tuned(files, tmp_path_factory):
  """A fine-tuning run of the .bin on its own tokenizer (60 steps, so that the model has learned that tokenization),
  and its model exported back to a .bin beside a copy of the tokenizer.bin."""
  d = tmp_path_factory.mktemp("tuned")
  res = invoke("train", f"--init_from={files['model']}", f"--data={files['text']}", f"--out_dir={d / 'run'}", "--max_iters=60",
               "--eval_interval=60", "--always_save_checkpoint=True", "--warmup_iters=0", "--learning_rate=1e-2", *EVAL)
  assert res.exit_code == 0, res.output
  out = invoke("export-model", d / "run", "--format", "llama2c", "--out", d / "back")
  assert out.exit_code == 0, out.output
  return {"run": d / "run", "back": d / "back", "output": res.output}

@pytest.mark.slow
def test_fine_tune_a_bin_on_its_own_tokenizer_and_export_it_back(files, tuned):
  rdir = tuned["run"]
  cfg = json.loads((rdir / "config.json").read_text())
  # its own tokenizer (beside the .bin) and its own context length, unless given
  assert cfg["options"]["tokenizer"] == str(files["tok"]) and cfg["model_args"]["max_seq_len"] == SEQ_LEN
  assert cfg["tokenizer"]["kind"] == "llama2c" and (rdir / "tokenizer.tok").read_bytes() == files["raw_tok"]
  assert f"Initializing from {files['model']}, its max_seq_len {SEQ_LEN}, its tokenizer {files['tok']}" in tuned["output"]
  assert (tuned["back"] / "tokenizer.bin").read_bytes() == files["raw_tok"]  # unchanged, as it came in
  assert struct.unpack_from("<7i", (tuned["back"] / "model.bin").read_bytes())[6] == SEQ_LEN
  # run.c's view of the result: the exported .bin samples exactly as the run does
  args = ["--start", "Once", "--temperature=0", "--max_new_tokens=12", "--no-preamble"]
  a, b = invoke("sample", "--checkpoint", rdir, *args), invoke("sample", "--checkpoint", tuned["back"] / "model.bin", *args)
  assert a.exit_code == b.exit_code == 0 and a.output == b.output
  res = invoke("export-model", rdir, "--format", "hf", "--out", rdir.parent / "hf")
  assert res.exit_code == 1 and "export it with --format llama2c" in res.output and not (rdir.parent / "hf").exists()

def test_fine_tune_starts_from_the_models_own_loss(files, tuned, tmp_path, monkeypatch):
  """A fine-tuning run of the exported model starts at the loss the model ended with (the same val windows: the
  same number), and far below what the same model scores with a tokenizer of its size but other ids."""
  monkeypatch.chdir(tmp_path)
  model = tuned["back"] / "model.bin"
  ended = val_losses(tuned["output"])[-1]
  res = invoke("train", f"--init_from={model}", f"--data={files['text']}", "--out_dir=again", "--eval_only=True", *EVAL)
  assert res.exit_code == 0, res.output
  assert abs(val_losses(res.output)[0] - ended) < 1e-4 and ended < val_losses(tuned["output"])[0] - 1
  # another vocabulary of the same size: the merges' ids shuffled, the file otherwise the same
  tok = read_tokenizer_bin(files["tok"])
  order = list(range(259, tok.vocab_size)); random.Random(1).shuffle(order)
  pieces, scores = tok.pieces[:259] + [tok.pieces[i] for i in order], list(tok.scores[:259]) + [tok.scores[i] for i in order]
  (tmp_path / "other.bin").write_bytes(struct.pack("<i", max(map(len, pieces))) +
                                       b"".join(struct.pack("<fi", s, len(p)) + p for s, p in zip(scores, pieces)))
  res = invoke("train", f"--init_from={model}", f"--data={files['text']}", "--tokenizer=other.bin", "--out_dir=other",
               "--eval_only=True", *EVAL)
  assert res.exit_code == 0 and val_losses(res.output)[0] > ended + 1, res.output

def test_fine_tune_context_shorter_taken_longer_refused(files, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  args = [f"--init_from={files['model']}", f"--data={files['text']}", "--eval_only=True", *EVAL]
  assert invoke("train", "--out_dir=short", *args, "--max_seq_len=8").exit_code == 0
  assert json.loads((tmp_path / "runs" / "short" / "config.json").read_text())["model_args"]["max_seq_len"] == 8
  res = invoke("train", "--out_dir=long", *args, "--max_seq_len=64")
  assert res.exit_code == 1 and res.output.strip().endswith(
    f"--max_seq_len=64 is longer than the context of {files['model']} ({SEQ_LEN}): give at most {SEQ_LEN}")

def test_fine_tune_from_a_hugging_face_directory_with_its_tokenizer_json(tmp_path, monkeypatch):
  from test_sample import make_run
  from tinystory.tokenizer import fit_tokenizer
  monkeypatch.chdir(tmp_path)
  tok = fit_tokenizer(STORIES * 3, "bpe", 300)
  run = make_run(tmp_path / "src", tok, ffn_bias=False, dropout=0.0)
  assert invoke("export-model", run, "--format", "hf", "--out", tmp_path / "hf").exit_code == 0
  (tmp_path / "stories.txt").write_text("\n<|endoftext|>\n".join(STORIES * 4), encoding="utf-8")
  res = invoke("train", f"--init_from={tmp_path / 'hf'}", "--data=stories.txt", "--out_dir=ft", "--max_iters=0",
               "--eval_only=True", "--eval_iters=1", "--batch_size=2")
  assert res.exit_code == 0, res.output
  cfg = json.loads((tmp_path / "runs" / "ft" / "config.json").read_text())
  assert cfg["tokenizer"]["sha256"] == tok.sha256 and cfg["options"]["tokenizer"] == str(tmp_path / "hf" / "tokenizer.json")
  # the pair is checked where it can be: config.json's special ids against the tokenizer's
  conf = json.loads((tmp_path / "hf" / "config.json").read_text())
  (tmp_path / "hf" / "config.json").write_text(json.dumps({**conf, "bos_token_id": 7}))
  res = invoke("sample", "--checkpoint", tmp_path / "hf", "--max_new_tokens=2")
  assert res.exit_code == 1 and "bos_token_id is 7 but the tokenizer's is 1" in res.output

# *** errors: the format found, header values as the file holds them ***

def test_errors_name_the_format_they_read(tmp_path, files):
  junk = tmp_path / "junk.tok"
  junk.write_bytes(b"\x07\x00\x00\x00" + bytes(range(200, 256)))
  res = invoke("tokenizer", "info", junk)
  assert res.exit_code == 1 and "read as a llama2.c tokenizer.bin" in res.output and len(res.output.splitlines()) == 1
  text = tmp_path / "text.tok"
  text.write_text("hello\n")
  res = invoke("tokenizer", "info", text)
  assert res.exit_code == 1 and "is not a valid tokenizer file: its first line is not a JSON header" in res.output
  bad_json = tmp_path / "tokenizer.json"
  bad_json.write_text('{"model": 1')
  res = invoke("tokenizer", "info", bad_json)
  assert res.exit_code == 1 and "read as a tokenizer.json: not valid JSON" in res.output

def test_a_negative_vocab_size_is_reported_as_the_file_holds_it(tmp_path):
  path = tmp_path / "m.bin"
  path.write_bytes(struct.pack("<7i", 16, 32, 1, 2, 2, -512, 8) + bytes(100))
  with pytest.raises(UserError, match="vocab_size=-512"): from tinystory.llama2c import read_model_bin; read_model_bin(path)

def mutate(data: bytes, rnd: random.Random) -> bytes:
  """A damaged copy: truncated, a byte changed, an int32 replaced by an absurd one, or bytes appended."""
  b = bytearray(data)
  match rnd.randrange(4):
    case 0: return bytes(b[:rnd.randrange(len(b))])
    case 1: b[rnd.randrange(len(b))] = rnd.randrange(256); return bytes(b)
    case 2:
      at = rnd.randrange(0, len(b) - 4); b[at:at + 4] = struct.pack("<i", rnd.choice([0, -1, 2**31 - 1, -2**31, 1 << 20])); return bytes(b)
    case _: return bytes(b) + bytes(rnd.randrange(1, 9))

@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["bin", "json"]), st.randoms(use_true_random=False))
def test_malformed_tokenizer_files_of_every_format_are_one_line_errors(files, tmp_path_factory, kind, rnd):
  d = tmp_path_factory.mktemp("bad")
  if kind == "bin": good = files["raw_tok"]
  else:
    from tinystory.hf import tokenizer_json
    from tinystory.tokenizer import fit_tokenizer
    good = json.dumps(tokenizer_json(fit_tokenizer(STORIES, "char"))).encode()
  path = d / ("tokenizer." + kind)
  path.write_bytes(mutate(good, rnd) if rnd.random() < 0.8 else bytes(rnd.randrange(256) for _ in range(rnd.randrange(40))))
  try: load_tokenizer(path)
  except UserError as e: assert "\n" not in str(e) and str(path) in str(e)

def test_a_tokenizer_of_another_size_is_refused_before_the_data_is_prepared(files, tmp_path, monkeypatch):
  from tinystory.tokenizer import fit_tokenizer
  monkeypatch.chdir(tmp_path)
  fit_tokenizer(STORIES, "char").save(tmp_path / "small.tok")
  res = invoke("train", f"--init_from={files['model']}", f"--data={files['text']}", "--tokenizer=small.tok", "--out_dir=x")
  n = read_tokenizer_bin(files["tok"]).vocab_size
  assert res.exit_code == 1 and f"tokenizer small.tok has {fit_tokenizer(STORIES, 'char').vocab_size} tokens but " \
         f"{files['model']} has vocab_size={n}: pass its own tokenizer" in res.output
  assert "preparing shards" not in res.output and not (tmp_path / "cache").exists()

def test_a_tokenizer_json_of_another_layout_is_a_one_line_error(tmp_path):
  (p := tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": [["<unk>", 0.0]]}, "pre_tokenizer": None}))
  res = invoke("tokenizer", "info", p)
  assert res.exit_code == 1 and "is not a tokenizer.json written by `export-model --format hf`" in res.output
