import base64, functools, hashlib, json, random
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st
from cli import cli
from tinystory import UserError
from tinystory.loader import load_tokenizer
from tinystory.tokenizer import Tokenizer, fit_tokenizer, learn_merges

def toy_stories(n=200, seed=0) -> list[str]:
  rng = random.Random(seed)
  names = ["Lily", "Tom", "Sue", "Max", "Ben", "Mia", "Zoe", "Jack"]
  verbs = ["saw", "liked", "found", "hugged", "wanted", "played with", "looked at", "jumped over"]
  things = ["a dog", "the sun", "a big red ball", "her mom", "a funny cat", "the old tree", "a shiny car", "his toys"]
  return [" ".join(f"{rng.choice(names)} {rng.choice(verbs)} {rng.choice(things)}{rng.choice('.!?')}" for _ in range(4))
          for _ in range(n)]

@functools.cache
def bpe() -> Tokenizer: return fit_tokenizer(toy_stories(), "bpe", 361)

@functools.cache
def char() -> Tokenizer: return fit_tokenizer(toy_stories(), "char", None)

def raises(msg: str, fn, *args, **kw):
  with pytest.raises(UserError) as e: fn(*args, **kw)
  assert str(e.value) == msg

# ---- char ----

def test_char_orders_by_frequency_then_code_point_after_specials():
  tok = fit_tokenizer(["bba", "c a"], "char", None)  # a:2 b:2 ' ':1 c:1
  assert (tok.kind, tok.vocab_size, tok.bos_id, tok.eos_id) == ("char", 7, 1, 2)
  assert [tok.token_bytes(i) for i in range(7)] == ["\u2047".encode(), b"", b"", b"a", b"b", b" ", b"c"]
  assert tok.encode("cab a", bos=True) == [1, 6, 3, 4, 5, 3]

def test_char_smaller_vocab_keeps_most_frequent_and_maps_the_rest_to_unk():
  tok = fit_tokenizer(["bba", "c a"], "char", 5)
  assert tok.encode("abc z\u00e9\U0001f600") == [3, 4, 0, 0, 0, 0, 0]
  assert tok.decode(tok.encode("abc")) == "ab\u2047"

def test_char_encode_matches_a_per_character_lookup():
  tok, rng = char(), np.random.default_rng(0)
  vocab = {tok.token_bytes(i).decode(): i for i in range(3, tok.vocab_size)}
  text = "".join(rng.choice(list(vocab) + ["\u00e9", "\U0001f600", "\x00", "\uffff"], 2000))
  ids = tok.encode_array(text)
  assert ids.dtype == np.uint16 and ids.tolist() == [vocab.get(c, 0) for c in text]

@settings(max_examples=200, deadline=None)
@given(st.data())
def test_char_round_trips_text_made_of_its_characters(data):
  tok = char()
  text = data.draw(st.text(alphabet=[tok.token_bytes(i).decode() for i in range(3, tok.vocab_size)]))
  assert tok.decode(tok.encode(text)) == text
  assert tok.decode(tok.encode_array(text, bos=True)) == text

def test_char_vocab_larger_than_the_corpus_allows_is_refused():
  raises("char vocab size 8 is too large: the data has 4 distinct characters, so at most 7 (with <unk>, <s>, </s>)",
         fit_tokenizer, ["bba", "c a"], "char", 8)

# ---- bpe ----

def test_bpe_learns_the_most_frequent_pairs_first_ties_to_the_smallest_ids():
  # chunks: "hug" x1, " hug" x2, " pug", " pun", " bun"; byte b has id 3+b, so " " is 35 and "p" is 115
  tok = fit_tokenizer(["hug hug hug pug pun bun"], "bpe", 264)
  assert [tok.token_bytes(i) for i in range(259, 264)] == [b"ug", b"hug", b" p", b" hug", b"un"]
  assert [tok.token_bytes(i) for i in range(3, 259)] == [bytes([b]) for b in range(256)]
  assert tok.encode("hug hug pun") == [260, 262, 261, 263]

def test_learn_merges_counts_incrementally_like_a_full_recount():
  rng = random.Random(1)
  words = [[rng.randrange(4) for _ in range(rng.randrange(1, 9))] for _ in range(300)]
  freqs = [rng.randrange(1, 5) for _ in words]
  vocab, ref_words = [bytes([i]) for i in range(4)], [list(w) for w in words]
  learn_merges(words, freqs, vocab, 40)
  ref_vocab = [bytes([i]) for i in range(4)]
  while len(ref_vocab) < 40:  # reference: recount every pair before each merge, take the max count, ties to smaller ids
    counts = {}
    for w, f in zip(ref_words, freqs):
      for p in zip(w, w[1:]): counts[p] = counts.get(p, 0) + f
    if not counts: break
    a, b = min(counts, key=lambda p: (-counts[p], p))
    t = ref_vocab[a] + ref_vocab[b]
    new = ref_vocab.index(t) if t in ref_vocab else len(ref_vocab)
    if new == len(ref_vocab): ref_vocab.append(t)
    for w in ref_words:
      i = 0
      while i < len(w) - 1:
        if (w[i], w[i + 1]) == (a, b): w[i:i + 2] = [new]
        i += 1
  assert vocab == ref_vocab and words == ref_words

def test_learn_merges_reuses_the_token_when_two_pairs_spell_the_same_bytes():
  vocab, words = [b"a", b"bc", b"ab", b"c"], [[0, 1], [2, 3]]
  learn_merges(words, [5, 3], vocab, 10)  # "a"+"bc" then "ab"+"c": both are "abc"
  assert vocab == [b"a", b"bc", b"ab", b"c", b"abc"] and words == [[4], [4]]

@settings(max_examples=300, deadline=None)
@given(st.text())
def test_bpe_round_trips_any_text(text):
  assert bpe().decode(bpe().encode(text)) == text
  assert bpe().decode(bpe().encode_array(text, bos=True)) == text

def test_bpe_361_has_specials_bytes_and_merges_and_compresses():
  tok, text = bpe(), toy_stories(1, seed=9)[0]
  assert (tok.kind, tok.vocab_size, tok.bos_id, tok.eos_id) == ("bpe", 361, 1, 2)
  assert len(tok.encode(text)) < len(text) / 2
  ids = tok.encode_array(text, bos=True)
  assert ids.dtype == np.uint16 and ids[0] == 1 and 1 not in ids[1:].tolist()

def test_special_token_text_is_encoded_as_plain_text():
  for tok in (bpe(), fit_tokenizer(["<s></s><unk>"], "char", None)):
    ids = tok.encode("<s></s><unk>")
    assert not {0, 1, 2} & set(ids) and tok.decode(ids) == "<s></s><unk>"

def test_token_bytes_of_specials_and_bytes():
  tok = bpe()
  assert [tok.token_bytes(i) for i in (0, 1, 2, 3, 3 + 0xe2)] == ["\u2047".encode(), b"", b"", b"\x00", b"\xe2"]
  assert b"".join(tok.token_bytes(i) for i in tok.encode("h\u00e9llo \U0001f600")) == "h\u00e9llo \U0001f600".encode()

def test_bpe_vocab_larger_than_the_corpus_allows_is_refused():
  raises("bpe vocab size 300 is too large: the data allows only 268 tokens (every pair of adjacent tokens is already merged)",
         fit_tokenizer, ["hug hug hug pug pun bun"], "bpe", 300)

@pytest.mark.parametrize("kind, size, msg", [
  ("char", 65536, "vocab size 65536 is too large: at most 65535 (shards store token ids as uint16)"),
  ("bpe", 70000, "vocab size 70000 is too large: at most 65535 (shards store token ids as uint16)"),
  ("bpe", None, "bpe needs a vocab size (at least 259)"),
  ("bpe", 258, "bpe vocab size 258 is too small: at least 259 (<unk>, <s>, </s> and the 256 bytes)"),
  ("char", 3, "char vocab size 3 is too small: at least 4 (<unk>, <s>, </s> and one character)"),
  ("word", 100, "unknown tokenizer kind 'word' (expected 'char' or 'bpe')")])
def test_bad_fit_options_are_refused(kind, size, msg): raises(msg, fit_tokenizer, ["some text"], kind, size)

def test_fitting_no_stories_is_refused():
  for kind, size in (("char", None), ("bpe", 300)): raises("no text to fit a tokenizer on: the data holds no stories", fit_tokenizer, [], kind, size)

@pytest.mark.parametrize("ids, msg", [
  ([3, 361], "token id 361 is out of range: this bpe tokenizer has ids 0..360"),
  ([-1, 5], "token id -1 is out of range: this bpe tokenizer has ids 0..360"),
  (["7"], "token ids must be integers, got '7'"),
  ([1.5], "token ids must be integers, got 1.5")])
def test_decode_refuses_bad_ids(ids, msg): raises(msg, bpe().decode, ids)

# ---- file ----

@pytest.mark.parametrize("make", [bpe, char])
def test_save_then_load_gives_the_same_tokenizer(tmp_path, make):
  tok, text = make(), " ".join(toy_stories(3, seed=5))
  tok.save(tmp_path / "t.tok")
  raw = (tmp_path / "t.tok").read_bytes()
  back = load_tokenizer(tmp_path / "t.tok")
  assert raw == tok.to_bytes() and back.sha256 == tok.sha256 == hashlib.sha256(raw).hexdigest()
  assert (back.kind, back.vocab_size, back.encode(text, bos=True)) == (tok.kind, tok.vocab_size, tok.encode(text, bos=True))
  assert [back.token_bytes(i) for i in range(tok.vocab_size)] == [tok.token_bytes(i) for i in range(tok.vocab_size)]
  header = json.loads(raw.split(b"\n")[0])
  assert header == {"format": "tinystory-tokenizer", "version": 1, "kind": tok.kind, "vocab_size": tok.vocab_size,
                    "pattern": tok.pattern, "special_tokens": {"<unk>": 0, "<s>": 1, "</s>": 2}}
  assert raw.split(b"\n")[1] == base64.b64encode(tok.token_bytes(3)) + b" 3"
  assert list(tmp_path.iterdir()) == [tmp_path / "t.tok"]  # no temp file left behind

def test_saving_creates_the_directory_or_is_refused(tmp_path):
  char().save(tmp_path / "new" / "dir" / "t.tok")
  assert load_tokenizer(tmp_path / "new" / "dir" / "t.tok").sha256 == char().sha256
  (tmp_path / "file").write_text("x")
  raises(f"the tokenizer file's directory {tmp_path}/file is a file, expected a directory", char().save, tmp_path / "file" / "t.tok")
  raises(f"cannot write {tmp_path}: Is a directory", char().save, tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "new"]

def test_fitted_tokenizers_differ_in_sha256():
  assert len({bpe().sha256, char().sha256, fit_tokenizer(toy_stories(), "char", 20).sha256}) == 3

def corrupt_file(tmp_path, edit) -> str:
  lines = fit_tokenizer(["bba", "c a"], "char", None).to_bytes().decode().split("\n")
  header = json.loads(lines[0])
  edit(header, lines)
  if lines[0].startswith("{"): lines[0] = json.dumps(header)
  (p := tmp_path / "bad.tok").write_text("\n".join(lines))
  return str(p)

@pytest.mark.parametrize("edit, msg", [
  (lambda h, l: l.__setitem__(0, "not json"), " is not a valid tokenizer file: its first line is not a JSON header with \"format\": \"tinystory-tokenizer\""),
  (lambda h, l: h.update(format="tiktoken"), " is not a valid tokenizer file: its first line is not a JSON header with \"format\": \"tinystory-tokenizer\""),
  (lambda h, l: h.update(version=2), ": tokenizer format version 2 is not supported (expected 1)"),
  (lambda h, l: h.update(kind="word"), ": unknown tokenizer kind 'word' (expected 'char' or 'bpe')"),
  (lambda h, l: h.update(vocab_size=8), " is not a valid tokenizer file: the header says vocab_size 8 but the file has 7 tokens"),
  (lambda h, l: h.update(special_tokens={"<s>": 0}), ' is not a valid tokenizer file: special_tokens must be {"<unk>": 0, "<s>": 1, "</s>": 2}'),
  (lambda h, l: l.__setitem__(2, "Yg== 5"), " is not a valid tokenizer file: line 3 should be '<base64 bytes> 4', got 'Yg== 5'"),
  (lambda h, l: l.__setitem__(2, "Y!== 4"), " is not a valid tokenizer file: line 3 should be '<base64 bytes> 4', got 'Y!== 4'"),
  (lambda h, l: l.__setitem__(2, "YQ== 4"), " is not a valid tokenizer file: a token appears twice"),
  (lambda h, l: l.__setitem__(2, "YWI= 4"), " is not a valid tokenizer file: char token b'ab' is not the UTF-8 of one character"),
  (lambda h, l: h.update(kind="bpe"), " is not a valid tokenizer file: bpe vocab size 7 is outside 259..65535"),
  (lambda h, l: h.update(pattern="\\s"), " is not a valid tokenizer file: a char tokenizer has no pattern (it must be null)")])
def test_loading_a_bad_file_names_it_and_the_problem(tmp_path, edit, msg):
  path = corrupt_file(tmp_path, edit)
  raises(path + msg, load_tokenizer, path)

def test_loading_a_missing_or_binary_file_is_refused(tmp_path):
  raises(f"tokenizer file {tmp_path}/no.tok does not exist", load_tokenizer, tmp_path / "no.tok")
  (p := tmp_path / "bin.tok").write_bytes(b"\x80\x00")
  raises(f"{p} is not a valid tokenizer file: not UTF-8 text (byte 0), and not a llama2.c tokenizer.bin (2 bytes, too short)",
         load_tokenizer, p)

def test_loading_a_bpe_file_without_all_256_bytes_is_refused(tmp_path):
  lines = bpe().to_bytes().decode().split("\n")
  lines[3 + 65 - 2] = f"{base64.b64encode(b'zz').decode()} {3 + 65}"  # byte 'A' replaced
  (p := tmp_path / "bpe.tok").write_text("\n".join(lines))
  raises(f"{p} is not a valid tokenizer file: bpe ids 3..258 must be the 256 single bytes", load_tokenizer, p)

def test_loading_a_bpe_file_with_a_bad_pattern_is_refused(tmp_path):
  lines = bpe().to_bytes().decode().split("\n")
  lines[0] = lines[0].replace('"pattern": "', '"pattern": "(')  # an unbalanced parenthesis
  (p := tmp_path / "bpe.tok").write_text("\n".join(lines))
  raises(f"{p} is not a valid tokenizer file: its pattern is not the bpe pre-tokenizer pattern this version writes", load_tokenizer, p)
  lines[0] = lines[0].replace('"pattern": "(', '"pattern": "')[:-1] + ', "pattern": "\\\\s"}'  # valid, but drops text
  (p := tmp_path / "bpe.tok").write_text("\n".join(lines))
  raises(f"{p} is not a valid tokenizer file: its pattern is not the bpe pre-tokenizer pattern this version writes", load_tokenizer, p)

# ---- cli ----

def run(*args, input=None):
  return CliRunner().invoke(cli, [str(a) for a in args], input=input)

@pytest.fixture
def char_file(tmp_path):
  fit_tokenizer(["bba", "c a"], "char", None).save(p := tmp_path / "c.tok")
  return p

def test_cli_encode_prints_space_separated_ids(char_file):
  assert (r := run("tokenizer", "encode", "--tokenizer", char_file, "cab a")).exit_code == 0 and r.output == "6 3 4 5 3\n"
  assert run("tokenizer", "encode", "--tokenizer", char_file, "--bos", "ab").output == "1 3 4\n"
  assert run("tokenizer", "encode", "--tokenizer", char_file, input="ba").output == "4 3\n"

def test_cli_decode_reads_ids_from_args_or_stdin(char_file):
  assert (r := run("tokenizer", "decode", "--tokenizer", char_file, "1", "6", "3", "0")).exit_code == 0 and r.output == "ca\u2047\n"
  assert run("tokenizer", "decode", "--tokenizer", char_file, input="4 3\n5 6\n").output == "ba c\n"

@pytest.mark.parametrize("ids, msg", [(["3", "x"], "'x' is not a token id (expected integers 0..6)"),
                                      (["7"], "token id 7 is out of range: this char tokenizer has ids 0..6"),
                                      (["--", "-2"], "token id -2 is out of range: this char tokenizer has ids 0..6")])
def test_cli_decode_refuses_bad_ids(char_file, ids, msg):
  r = run("tokenizer", "decode", "--tokenizer", char_file, *ids)
  assert r.exit_code == 1 and r.output == f"Error: {msg}\n"

def test_cli_info_prints_kind_size_specials_and_chars_per_token(tmp_path, char_file):
  tok = load_tokenizer(char_file)
  r = run("tokenizer", "info", char_file, "--text", "abba")
  assert r.exit_code == 0 and r.output == ("kind: char\nvocab_size: 7 (3 specials + 4 characters)\n"
    f"specials: <unk>=0 <s>=1 </s>=2\nsha256: {tok.sha256}\nchars_per_token: 1.000 (4 chars, 4 tokens of --text)\n")
  bpe().save(p := tmp_path / "b.tok")
  (t := tmp_path / "t.txt").write_text("Lily saw a dog. ")
  out = run("tokenizer", "info", p, "--text-file", t).output.split("\n")
  assert out[1] == "vocab_size: 361 (3 specials + 256 bytes + 102 merges)" and out[3].startswith("pattern: '(?i:")
  assert out[5] == f"chars_per_token: {16 / len(bpe().encode('Lily saw a dog. ')):.3f} (16 chars, {len(bpe().encode('Lily saw a dog. '))} tokens of {t})"
  assert run("tokenizer", "info", p).output.split("\n")[5].endswith("tokens of the built-in sentence)")

def test_cli_reports_bad_files_and_options_in_one_line(tmp_path, char_file):
  (bad := tmp_path / "bad.tok").write_text("{}")
  for args, msg in [(("info", bad), f"{bad} is not a valid tokenizer file: its first line is not a JSON header with \"format\": \"tinystory-tokenizer\""),
                    (("info", tmp_path / "no.tok"), f"tokenizer file {tmp_path}/no.tok does not exist"),
                    (("info", char_file, "--text", "a", "--text-file", bad), "give --text or --text-file, not both"),
                    (("info", char_file, "--text", ""), "--text is empty: no characters to measure"),
                    (("encode", "--tokenizer", bad, "x"), f"{bad} is not a valid tokenizer file: its first line is not a JSON header with \"format\": \"tinystory-tokenizer\"")]:
    r = run("tokenizer", *args)
    assert r.exit_code == 1 and r.output == f"Error: {msg}\n"

def test_cli_fit_writes_a_tokenizer_from_data_files(tmp_path):
  (d := tmp_path / "stories.txt").write_text("\n\n".join(toy_stories(50)))
  r = run("tokenizer", "fit", "--data", d, "--kind", "bpe", "--vocab-size", 300, "--out", tmp_path / "b.tok")
  assert r.exit_code == 0, r.output
  tok = load_tokenizer(tmp_path / "b.tok")
  assert (tok.kind, tok.vocab_size) == ("bpe", 300) and "bpe tokenizer: 300 tokens from 50 stories" in r.output
  r = run("tokenizer", "fit", "--data", d, "--kind", "char", "--vocab-size", 1000, "--out", tmp_path / "c.tok")
  assert r.exit_code == 1 and r.output.startswith("Error: char vocab size 1000 is too large: the data has ")
