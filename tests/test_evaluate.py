"""`eval`: bits per character against an independent float64 computation over the same windows, exact counts of
tokens, characters and bytes, --max_windows, prepared shards, --json, and one-line errors."""
import json, math
import numpy as np
import pytest
from click.testing import CliRunner
from cli import cli
from tinystory import UserError
from tinystory.checkpoint import model_weights, save_checkpoint
from tinystory.config import EvalConfig, ModelArgs
from tinystory.evaluate import TokenStream, evaluate, run_eval, text_tokens
from tinystory.model import Transformer
from tinystory.pretok import prepare
from tinystory.synthetic import synthetic_stories
from tinystory.tokenizer import fit_tokenizer
from test_model import ref_logits

L = 16
# non-ASCII characters: 2- and 3-byte UTF-8, which a small BPE splits over byte tokens (and windows may split too)
STORIES = [s.replace("park", "café").replace("happy", "naïve — happy") for s in synthetic_stories(5)]

@pytest.fixture(params=["char", "bpe"])
def run(request, tmp_path):
  """A run dir holding a small random model (weights scaled up so that its predictions are far from uniform; pinv
  unembedding with the char vocabulary, tied with the BPE), its tokenizer, and the stories as a TinyStories-train.txt
  file."""
  text = tmp_path / "stories.txt"
  text.write_text("".join(s + "\n<|endoftext|>\n" for s in STORIES), encoding="utf-8")
  tok = fit_tokenizer(STORIES, request.param, None if request.param == "char" else 280)
  args = ModelArgs(dim=16, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size, multiple_of=1, max_seq_len=L, dropout=0.0,
                   unembedding="pinv" if request.param == "char" else "tied")
  model = Transformer(args, seed=3)
  weights = {n: w * (1 if w.ndim == 1 else 8) for n, w in model_weights(model).items()}
  rdir = tmp_path / "run"
  save_checkpoint(rdir, weights, {}, {"model_args": vars(args), "iter_num": 1, "best_val_loss": 9.0, "tokenizer_sha256": tok.sha256})
  tok.save(rdir / "tokenizer.tok")
  return rdir, text, tok, args, weights

def reference(weights, args, ids: np.ndarray, windows: int) -> float:
  """Total nats of the first `windows` windows, in float64: window k feeds ids[kL:kL+L] and predicts ids[kL+1:kL+L+1]."""
  nats = 0.0
  for k in range(windows):
    w = ids[k * L:k * L + L + 1]
    logits = ref_logits(weights, args, w[None, :-1])[0]
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    nats -= logp[np.arange(len(w) - 1), w[1:]].sum()
  return nats

def stream_ids(tok, stories) -> np.ndarray: return np.concatenate([tok.encode_array(s, bos=True) for s in stories]).astype(np.int64)

@pytest.mark.slow
def test_bits_per_char_match_a_float64_reference_and_counts_are_exact(run):
  rdir, text, tok, args, weights = run
  res = run_eval(EvalConfig(str(rdir), str(text), batch_size=4))
  ids = stream_ids(tok, STORIES)
  windows = math.ceil((len(ids) - 1) / L)
  assert (len(ids) - 1) % L  # the last window is a partial one
  assert (res["windows"], res["tokens"], res["max_seq_len"]) == (windows, len(ids) - 1, L)
  assert res["chars"] == sum(map(len, STORIES)) and res["bytes"] == sum(len(s.encode()) for s in STORIES)
  assert res["chars"] < res["bytes"] and res["unk_tokens"] == 0
  nats = reference(weights, args, ids, windows)
  assert res["nats"] == pytest.approx(nats, rel=1e-5)
  assert res["bits_per_char"] == pytest.approx(nats / math.log(2) / res["chars"], rel=1e-5)
  assert res["bits_per_byte"] == pytest.approx(nats / math.log(2) / res["bytes"], rel=1e-5)
  assert res["loss"] == pytest.approx(nats / (len(ids) - 1), rel=1e-5)
  assert res["bits_per_token"] == pytest.approx(res["loss"] / math.log(2), rel=1e-12)
  assert abs(res["loss"] - math.log(tok.vocab_size)) > 0.1  # not a uniform model: which token and context matter
  # deterministic, and the same numbers whatever the batch size or compilation
  assert run_eval(EvalConfig(str(rdir), str(text), batch_size=4)) == res
  again = run_eval(EvalConfig(str(rdir), str(text), batch_size=64))
  assert again["nats"] == pytest.approx(res["nats"], rel=1e-6) and again["tokens"] == res["tokens"]
  compiled, eager = (run_eval(EvalConfig(str(rdir), str(text), max_windows=5, batch_size=4, compile=c)) for c in (True, False))
  assert eager["nats"] == pytest.approx(compiled["nats"], rel=1e-6) and eager["tokens"] == compiled["tokens"] == 5 * L

@pytest.mark.slow
def test_max_windows_evaluates_the_first_windows(run):
  rdir, text, tok, args, weights = run
  res = run_eval(EvalConfig(str(rdir), str(text), max_windows=5, batch_size=4))
  ids = stream_ids(tok, STORIES)
  predicted = ids[1:5 * L + 1]
  assert (res["windows"], res["tokens"]) == (5, 5 * L)
  # counted from the ids' bytes: a character counts with the token holding its first byte
  data = b"".join(tok.token_bytes(int(i)) for i in predicted)
  assert res["bytes"] == len(data) and res["chars"] == sum((c & 0xC0) != 0x80 for c in data)
  assert res["nats"] == pytest.approx(reference(weights, args, ids, 5), rel=1e-5)
  assert run_eval(EvalConfig(str(rdir), str(text), max_windows=10**6))["tokens"] == len(ids) - 1

def test_a_text_shorter_than_a_window_is_evaluated_whole(run, tmp_path):
  rdir, _, tok, args, weights = run
  (short := tmp_path / "short.txt").write_text("Tom ran.")
  ids = stream_ids(tok, ["Tom ran."])
  assert len(ids) - 1 < L
  res = run_eval(EvalConfig(str(rdir), str(short)))
  assert (res["windows"], res["tokens"], res["chars"]) == (1, len(ids) - 1, 8)
  assert res["nats"] == pytest.approx(reference(weights, args, ids, 1), rel=1e-5)

def test_prepared_shards_give_the_raw_texts_numbers(run, tmp_path):
  rdir, text, tok, *_ = run
  prepare([str(text)], rdir / "tokenizer.tok", tmp_path / "shards", val_fraction=0.4)  # val = the first 2 stories
  (head := tmp_path / "head.txt").write_text("".join(s + "\n<|endoftext|>\n" for s in STORIES[:2]))
  val, raw = run_eval(EvalConfig(str(rdir), str(tmp_path / "shards"))), run_eval(EvalConfig(str(rdir), str(head)))
  assert val["data"] == f"{tmp_path / 'shards'} (val split, 1 shard)"
  assert {k: val[k] for k in ("tokens", "chars", "bytes", "nats")} == {k: raw[k] for k in ("tokens", "chars", "bytes", "nats")}
  train = run_eval(EvalConfig(str(rdir), str(tmp_path / "shards"), split="train"))
  assert train["chars"] == sum(map(len, STORIES[2:]))
  with pytest.raises(UserError, match=r"^--split=train is for a prepared shard directory; --data .*stories.txt is raw text$"):
    run_eval(EvalConfig(str(rdir), str(text), split="train"))
  other = fit_tokenizer(["something else entirely"], "char")
  with pytest.raises(UserError, match="but the shards were made with vocab_size"):
    text_tokens([str(tmp_path / "shards")], other)

def test_token_stream_reads_across_chunks():
  s = TokenStream([np.arange(3), np.zeros(0, np.int64), np.arange(3, 7), np.arange(7, 10)])
  assert len(s) == 10 and s[2:8].tolist() == [2, 3, 4, 5, 6, 7] and s[8:20].tolist() == [8, 9] and s[10:12].size == 0

def test_cli_json_and_text_output(run):
  rdir, text, *_ = run
  res = CliRunner().invoke(cli, ["eval", "--checkpoint", str(rdir), "--data", str(text), "--max_windows=3", "--json"])
  assert res.exit_code == 0, res.output
  got = json.loads(res.stdout)  # stdout is the JSON alone: notes and the progress bar go to stderr
  assert got == run_eval(EvalConfig(str(rdir), str(text), max_windows=3))
  res = CliRunner().invoke(cli, ["eval", "--checkpoint", str(rdir), "--data", str(text), "--max-windows", "3"])
  assert res.exit_code == 0, res.output
  assert (f"loss {got['loss']:.4f} nats/token | {got['bits_per_token']:.4f} bits/token | {got['bits_per_char']:.4f} "
          f"bits/char | {got['bits_per_byte']:.4f} bits/byte") in res.stdout
  assert f"3 windows: {3 * L} tokens predicted, {got['chars']} characters, {got['bytes']} bytes" in res.stdout

@pytest.mark.parametrize("args, msg", [
  (["--data", "/no/such.txt"], "Error: data source /no/such.txt does not exist"),
  (["--data", "EMPTY"], "holds no stories to evaluate on"),
  ([], "Error: --data is required: the text to evaluate on"),
  (["--data", "TEXT", "--max_windows=-1"], "Error: --max_windows must be >= 0 (0: the whole text), got -1"),
  (["--data", "TEXT", "--split=test"], "Error: --split must be one of train, val, all, got 'test'"),
  (["--data", "TEXT", "--batch_size=0"], "Error: --batch_size must be a positive integer, got 0"),
  (["--data", "TEXT", "--checkpoint", "/no/run"], "Error: --checkpoint=/no/run: no such file or directory"),
])
def test_errors_are_one_line(run, tmp_path, args, msg):
  rdir, text, *_ = run
  (tmp_path / "empty.txt").write_text("\n\n")
  args = [{"TEXT": str(text), "EMPTY": str(tmp_path / "empty.txt")}.get(a, a) for a in args]
  if "--checkpoint" not in args: args += ["--checkpoint", str(rdir)]
  res = CliRunner().invoke(cli, ["eval", *args])
  assert res.exit_code == 1 and msg in res.output and res.output.strip().count("\n") == 0, res.output

def test_evaluate_needs_a_token_to_predict(run):
  rdir, _, tok, args, _ = run
  with pytest.raises(UserError, match="no token to predict"): evaluate(Transformer(args), tok, TokenStream([np.ones(1, np.uint16)]))
