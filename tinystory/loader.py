"""Where a model and its tokenizer come in, from any source: a tinystory run or checkpoint (`load_model`), a llama2.c
`.bin` or a Hugging Face directory (`load_model_file`, docs/exchange.md; train's --init_from); `load_for_inference`
takes any of them (sample, eval). The formats themselves are in llama2c.py and hf.py."""
import json, struct
from dataclasses import fields
from pathlib import Path
import numpy as np
from tinystory import UserError
from tinystory.checkpoint import load_checkpoint, resolve_checkpoint, run_of
from tinystory.config import ModelArgs, is_model_file
from tinystory.hf import parse_tokenizer_json, read_hf
from tinystory.llama2c import MAGIC, parse_tokenizer_bin, read_model_bin
from tinystory.log import log
from tinystory.model import Transformer, check_file_sizes
from tinystory.tokenizer import looks_like_tokenizer_bin, parse_tok, tokenizer_format

def load_model(ck: Path):
  """(model, ckpt.json) from a checkpoint dir; every problem is a UserError naming it."""
  meta, weights, _ = load_checkpoint(ck, optimizer=False)  # inference needs no optimizer state
  model = Transformer(model_args_of(ck, meta, weights))
  model.load_state_dict(weights)
  return model, meta

def model_args_of(ck: Path, meta: dict, weights: dict[str, np.ndarray]) -> ModelArgs:
  """A checkpoint's ModelArgs, checked against its weights' names and shapes and the machine's memory (before the
  model is built: model_args that lack a field get llama2.c's 7B defaults, a damaged max_seq_len is in no shape)."""
  known = [f.name for f in fields(ModelArgs)]
  if unknown := [k for k in meta["model_args"] if k not in known]:
    raise UserError(f"checkpoint {ck / 'ckpt.json'}: model_args has an unknown field {unknown[0]!r} (expected {', '.join(known)})")
  try: args = ModelArgs(**meta["model_args"])
  except (UserError, TypeError, ValueError) as e: raise UserError(f"checkpoint {ck / 'ckpt.json'}: model_args {e}") from None
  shapes = {n: tuple(w.shape) for n, w in weights.items() if n != "output.weight" or args.unembedding == "untied"}
  check_file_sizes(args, shapes, f"checkpoint {ck}", "its model_args")
  return args

def load_for_inference(checkpoint: str, tokenizer: str = ""):
  """(model, tokenizer, where it came from) for sample and eval: `checkpoint` is a llama2.c .bin or an exported Hugging
  Face directory (load_model_file), else a run or checkpoint as resolve_checkpoint takes it; `tokenizer` a
  tokenizer file or "" for the one saved with the model. The one place that inference loads a model."""
  if is_model_file(checkpoint): return (*load_model_file(checkpoint, tokenizer or None), Path(checkpoint))
  ck = resolve_checkpoint(checkpoint)
  model, meta = load_model(ck)
  run_dir = run_of(ck)
  tok_path = Path(tokenizer) if tokenizer else run_dir / "tokenizer.tok"
  if not tokenizer and not tok_path.is_file():
    raise UserError(f"no tokenizer saved with the checkpoint (expected {tok_path}): pass --tokenizer")
  tok = load_tokenizer(tok_path)
  if tok.vocab_size != model.args.vocab_size:
    raise UserError(f"tokenizer {tok_path} has {tok.vocab_size} tokens but the model in {ck} has vocab_size="
                    f"{model.args.vocab_size}: pass the tokenizer it was trained with")
  if meta.get("tokenizer_sha256") not in (None, tok.sha256):
    log(f"warning: tokenizer {tok_path} is not the one the model was trained with (sha256 differs)")
  return model, tok, ck

def model_file_context(path) -> tuple[int, int, Path]:
  """(context length, vocabulary size, its own tokenizer's path) of a model file, from its header or config.json
  alone (train reads them before the model and the data); 0 where unreadable: malformed files get their one-line
  errors from load_model_file."""
  p = Path(path)
  if p.is_dir():
    try: cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError): cfg = {}
    num = lambda k: v if isinstance(cfg, dict) and isinstance(v := cfg.get(k), int) and not isinstance(v, bool) else 0
    return num("max_position_embeddings"), num("vocab_size"), p / "tokenizer.json"
  try:
    with open(p, "rb") as f: head = f.read(40)
    c = struct.unpack_from("<7i", head, 8 if struct.unpack_from("<I", head)[0] == MAGIC else 0)
  except (OSError, struct.error): c = (0,) * 7
  return c[6], abs(c[5]), p.parent / "tokenizer.bin"

def load_model_file(path, tokenizer_path=None):
  """(model, tokenizer) from a model made elsewhere, for sample, eval and train --init_from:
    - a llama2.c .bin (version 0, 1 or 2; version 2 dequantized) with `tokenizer_path` a tokenizer.bin (run.c's
      encoder: RunCTokenizer) or a project .tok; default: tokenizer.bin beside the model;
    - a Hugging Face Llama directory (config.json, model.safetensors) with its tokenizer.json as written by
      `export-model --format hf` (a project Tokenizer), or `tokenizer_path`.
  The model is a project Transformer (ffn_bias and unembedding from the file: 'tied' for a shared classifier, else
  'untied'; the pseudo-inverse of an exported pinv or pinv_scaled model comes back as that untied matrix). Files are only read as
  bytes (no pickle); every problem is a UserError naming the file."""
  p = Path(path)
  if p.is_dir():
    args, weights = read_hf(p)
    default_tok, sizes_from = p / "tokenizer.json", "config.json"
  else:
    c, weights, _ = read_model_bin(p)
    sizes_from = "its header"
    args = dict(dim=c["dim"], n_layers=c["n_layers"], n_heads=c["n_heads"], n_kv_heads=c["n_kv_heads"],
                vocab_size=c["vocab_size"], hidden_dim=c["hidden_dim"], max_seq_len=c["seq_len"], dropout=0.0,
                ffn_bias=False, norm_eps=1e-5)  # run.c's eps
    weights.pop("freqs_cos", None); weights.pop("freqs_sin", None)  # recomputed by the model, as run.c does
    default_tok = p.parent / "tokenizer.bin"
  if "output.weight" in weights and np.array_equal(weights["output.weight"], weights["tok_embeddings.weight"]):
    del weights["output.weight"]
  args["unembedding"] = "untied" if "output.weight" in weights else "tied"
  # a directory's problems are named by its file: the shape by config.json, the weights by model.safetensors
  try: model_args = ModelArgs(**args)
  except UserError as e: raise UserError(f"{p / 'config.json' if p.is_dir() else path}: {e}") from None
  check_file_sizes(model_args, {n: w.shape for n, w in weights.items()}, path, sizes_from)
  model = Transformer(model_args)
  try: model.load_state_dict(weights)
  except UserError as e: raise UserError(f"{p / 'model.safetensors' if p.is_dir() else path}: {e}") from None
  tok = load_any_tokenizer(Path(tokenizer_path) if tokenizer_path else default_tok, model_args.vocab_size)
  if p.is_dir():  # the pair as far as it can be checked: the specials' ids in config.json (docs/exchange.md)
    cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    for key, want in (("bos_token_id", tok.bos_id), ("eos_token_id", tok.eos_id)):
      if cfg.get(key) not in (None, want):
        raise UserError(f"{p / 'config.json'}: {key} is {cfg.get(key)!r} but the tokenizer's is {want}: not this model's tokenizer")
  return model, tok

def load_tokenizer(path):
  """Read a tokenizer file of any kind the project reads, told apart by its contents (tokenizer_format): a .tok
  written by Tokenizer.save, llama2.c's tokenizer.bin (llama2c.RunCTokenizer: run.c's encoder and decoder) or a
  tokenizer.json written by `export-model --format hf`. Any problem is a UserError naming the file and its format.
  Here, above the formats, not in tokenizer.py: llama2c.py and hf.py build their readers on tokenizer.py's Tokenizer."""
  try: raw = Path(path).read_bytes()
  except FileNotFoundError: raise UserError(f"tokenizer file {path} does not exist") from None
  except IsADirectoryError: raise UserError(f"tokenizer {path} is a directory, expected a file (.tok, tokenizer.bin or tokenizer.json)") from None
  except OSError as e: raise UserError(f"cannot read tokenizer file {path}: {e.strerror}") from None
  fmt = tokenizer_format(raw, path)
  if fmt == "bin":
    if looks_like_tokenizer_bin(raw): return parse_tokenizer_bin(raw, path)
    try: return parse_tokenizer_bin(raw, path)
    except UserError as e:  # binary, but not clearly a tokenizer.bin: say what it is not, as either
      try: raw.decode()
      except UnicodeDecodeError as u: start = u.start
      why = str(e).partition("read as a llama2.c tokenizer.bin: ")[2]
      raise UserError(f"{path} is not a valid tokenizer file: not UTF-8 text (byte {start}), and not a llama2.c "
                      f"tokenizer.bin ({why})") from None
  if fmt == "json":
    return parse_tokenizer_json(raw, path)
  return parse_tok(raw, path)

def load_any_tokenizer(path: Path, vocab_size: int):
  """A project .tok, an exported tokenizer.json or a llama2.c tokenizer.bin (load_tokenizer), which must
  have `vocab_size` tokens."""
  if not path.is_file(): raise UserError(f"tokenizer {path} does not exist: pass --tokenizer (a tokenizer.bin or .tok)")
  tok = load_tokenizer(path)
  if tok.vocab_size != vocab_size:
    raise UserError(f"tokenizer {path} has {tok.vocab_size} tokens but the model has vocab_size={vocab_size}: pass its own tokenizer")
  return tok
