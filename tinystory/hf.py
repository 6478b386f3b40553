"""Hugging Face's Llama format, both ways: a directory that transformers loads as LlamaForCausalLM (config.json,
model.safetensors) with a tokenizer.json for the `tokenizers` library (docs/exchange.md).

Weights map one to one (llama2.c name -> HF name), except:
  - q and k projections: llama2.c rotates channel pairs (2j, 2j+1) of each head, HF rotates (j, j + head_dim/2)
    ("rotate_half"), so their output rows are permuted within each head (llama2.c's export.py documents it);
  - the unembedding is HF's lm_head, always untied: the embedding ('tied'), output.weight ('untied') or the
    materialised pseudo-inverse pinv(E)^T ('pinv'; 'pinv_scaled' times its scale);
  - w1's bias is gate_proj's bias under `mlp_bias: true`, with zero biases for up_proj and down_proj.
The tokenizer: char as a BPE model without merges over the characters (unknown characters -> <unk>, one each),
byte-level BPE as a BPE model over GPT-2's byte-to-unicode alphabet behind the project's pre-tokenizer pattern, with
every split of a token into two tokens as a merge, ranked by the token's id: the project's (tiktoken's) rule.
"""
import json
from pathlib import Path
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save
from tinystory import UserError, write_atomic
from tinystory.tokenizer import N_SPECIAL, PATTERN, Tokenizer

ROPE_THETA = 10000.0  # the project's (llama2.c's) RoPE base
SPECIALS = ["<unk>", "<s>", "</s>"]

def hf_names(n_layers: int) -> dict[str, str]:
  """llama2.c name -> HF name."""
  names = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
  for i in range(n_layers):
    p, q = f"layers.{i}.", f"model.layers.{i}."
    names |= {p + a: q + b for a, b in [
      ("attention_norm.weight", "input_layernorm.weight"), ("ffn_norm.weight", "post_attention_layernorm.weight"),
      ("attention.wq.weight", "self_attn.q_proj.weight"), ("attention.wk.weight", "self_attn.k_proj.weight"),
      ("attention.wv.weight", "self_attn.v_proj.weight"), ("attention.wo.weight", "self_attn.o_proj.weight"),
      ("feed_forward.w1.weight", "mlp.gate_proj.weight"), ("feed_forward.w1.bias", "mlp.gate_proj.bias"),
      ("feed_forward.w2.weight", "mlp.down_proj.weight"), ("feed_forward.w3.weight", "mlp.up_proj.weight")]}
  return names

def rotary_to_hf(w: np.ndarray, heads: int) -> np.ndarray:
  """Rows of a q/k projection from interleaved pairs (2j, 2j+1) to halves (j, j + head_dim/2), per head."""
  return w.reshape(heads, -1, 2, w.shape[1]).transpose(0, 2, 1, 3).reshape(w.shape)

def rotary_from_hf(w: np.ndarray, heads: int) -> np.ndarray:
  return w.reshape(heads, 2, -1, w.shape[1]).transpose(0, 2, 1, 3).reshape(w.shape)

# *** export ***

def hf_config(a) -> dict:
  return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": a.vocab_size,
          "hidden_size": a.dim, "intermediate_size": a.hidden_size, "num_hidden_layers": a.n_layers,
          "num_attention_heads": a.n_heads, "num_key_value_heads": a.kv_heads, "head_dim": a.head_dim,
          "hidden_act": "silu", "max_position_embeddings": a.max_seq_len, "rms_norm_eps": a.norm_eps,
          "rope_theta": ROPE_THETA, "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
          "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": a.ffn_bias, "tie_word_embeddings": False,
          "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None, "initializer_range": 0.02, "use_cache": True,
          "pretraining_tp": 1, "torch_dtype": "float32"}

def hf_weights(weights: dict[str, np.ndarray], a) -> dict[str, np.ndarray]:
  """HF's state dict from the project's weights (logical shapes, output.weight = the unembedding as (vocab, dim))."""
  names, out = hf_names(a.n_layers), {}
  weights = {**weights, "output.weight": weights.get("output.weight", weights["tok_embeddings.weight"])}
  for n, w in weights.items():
    if n.endswith("wq.weight"): w = rotary_to_hf(w, a.n_heads)
    elif n.endswith("wk.weight"): w = rotary_to_hf(w, a.kv_heads)
    out[names[n]] = np.ascontiguousarray(w, np.float32)
  if a.ffn_bias:  # HF's mlp_bias puts a bias on all three projections: up and down get zeros
    for i in range(a.n_layers):
      out[f"model.layers.{i}.mlp.up_proj.bias"] = np.zeros(a.hidden_size, np.float32)
      out[f"model.layers.{i}.mlp.down_proj.bias"] = np.zeros(a.dim, np.float32)
  return out

def write_hf(weights: dict[str, np.ndarray], a, tok, out: Path) -> list[Path]:
  """Write config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json into `out`."""
  files = {"config.json": json.dumps(hf_config(a), indent=1),
           "generation_config.json": json.dumps({"bos_token_id": 1, "eos_token_id": 2}, indent=1),
           "model.safetensors": save(hf_weights(weights, a), metadata={"format": "pt"}),
           "tokenizer.json": json.dumps(tokenizer_json(tok), ensure_ascii=False),
           "tokenizer_config.json": json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
             "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False,
             "clean_up_tokenization_spaces": False, "model_max_length": a.max_seq_len}, indent=1)}
  for name, data in files.items(): write_atomic(out / name, data)
  return [out / n for n in files]

def byte_alphabet() -> list[str]:
  """GPT-2's printable stand-in character for each byte (what the ByteLevel pre-tokenizer and decoder use)."""
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  chars, extra = {}, 0
  for b in range(256):
    if b in keep: chars[b] = chr(b)
    else: chars[b] = chr(256 + extra); extra += 1
  return [chars[b] for b in range(256)]

def hf_pattern(pattern: str) -> str:
  """The project's pre-tokenizer pattern for `tokenizers` (Oniguruma): its possessive quantifiers made plain (the same
  splits here: each quantified class is followed by something it cannot match, so nothing would be given back), and
  trailing whitespace anchored at the end of the text."""
  if pattern != PATTERN: raise UserError("the tokenizer's pre-tokenizer pattern is not the project's: it has no tokenizer.json form")
  plain = pattern.replace(r"\s++$", r"\s+\z")  # Oniguruma's $ is any line's end; the project's (Python's) the text's
  return plain.replace("?+", "?").replace("++", "+").replace("*+", "*").replace("{1,3}+", "{1,3}")

def tokenizer_json(tok) -> dict:
  if tok.kind == "llama2c":
    raise UserError("the run's tokenizer is a llama2.c tokenizer.bin, whose run.c encoder a tokenizer.json cannot "
                    "express: export it with --format llama2c (or llama2c-q8)")
  added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
            "special": True} for i, s in enumerate(SPECIALS)]
  toks = [tok.token_bytes(i) for i in range(N_SPECIAL, tok.vocab_size)]
  if tok.kind == "char":
    spell, merges = lambda b: b.decode(), []
    pre, decoder = None, {"type": "Fuse"}
  else:
    alphabet = byte_alphabet()
    spell = lambda b: "".join(alphabet[x] for x in b)
    ids = {t: i for i, t in enumerate(toks, N_SPECIAL)}
    merges = sorted((ids[t], k, spell(t[:k]), spell(t[k:])) for t in toks[256:] for k in range(1, len(t))
                    if t[:k] in ids and t[k:] in ids)
    merges = [[a, b] for _, _, a, b in merges]
    pre = {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": hf_pattern(tok.pattern)}, "behavior": "Isolated", "invert": False},
      {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
    decoder = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
  vocab = {s: i for i, s in enumerate(SPECIALS)} | {spell(t): i for i, t in enumerate(toks, N_SPECIAL)}
  bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
  return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
          "pre_tokenizer": pre,
          "post_processor": {"type": "TemplateProcessing", "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                             "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, bos, {"Sequence": {"id": "B", "type_id": 1}}],
                             "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
          "decoder": decoder,
          "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>" if tok.kind == "char" else None,
                    "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False,
                    "byte_fallback": False, "ignore_merges": True, "vocab": vocab, "merges": merges}}

# *** import ***

def read_tokenizer_json(path: Path):
  """The project Tokenizer that a tokenizer.json written by tokenizer_json stands for."""
  try: raw = Path(path).read_bytes()
  except OSError as e: raise UserError(f"cannot read {path}: {e.strerror or e}") from None
  return parse_tokenizer_json(raw, path)

def parse_tokenizer_json(raw: bytes, path):
  """read_tokenizer_json of a file's bytes."""
  try: j = json.loads(raw.decode("utf-8"))
  except UnicodeDecodeError as e: raise UserError(f"{path}, read as a tokenizer.json: not UTF-8 text (byte {e.start})") from None
  except ValueError as e: raise UserError(f"{path}, read as a tokenizer.json: not valid JSON ({e})") from None
  try:
    vocab, pre = j["model"]["vocab"], j["pre_tokenizer"]
    by_id = sorted((i, s) for s, i in vocab.items())
    if [i for i, _ in by_id] != list(range(len(by_id))) or [s for _, s in by_id[:3]] != SPECIALS: raise ValueError
    if pre is None: kind, pattern, toks = "char", None, [s.encode() for _, s in by_id[3:]]
    else:
      kind, pattern, decode = "bpe", PATTERN, {c: b for b, c in enumerate(byte_alphabet())}
      if pre["pretokenizers"][0]["pattern"]["Regex"] != hf_pattern(PATTERN): raise ValueError
      toks = [bytes(decode[c] for c in s) for _, s in by_id[3:]]
    return Tokenizer(kind, toks, pattern)
  except (KeyError, TypeError, IndexError, ValueError, AttributeError):
    raise UserError(f"{path} is not a tokenizer.json written by `export-model --format hf` (only those are read)") from None

def read_hf(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
  """(ModelArgs fields, weights by llama2.c names) of a Llama directory: config.json and model.safetensors. Only
  what the project's model computes is accepted; anything else is a UserError naming the setting."""
  try: cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
  except (OSError, ValueError) as e: raise UserError(f"cannot read {path / 'config.json'}: {getattr(e, 'strerror', None) or e}") from None
  if not (path / "model.safetensors").is_file():
    raise UserError(f"{path} has no model.safetensors (only single-file safetensors weights are read, never pickles)")
  def need(ok, what):
    if not ok: raise UserError(f"{path / 'config.json'}: {what} is not supported by this project's model")
  if not isinstance(cfg, dict): raise UserError(f"{path / 'config.json'} is not a JSON object: not a Hugging Face model config")
  # each field's type first, naming it: a null or a string would otherwise meet arithmetic as Python's raw TypeError
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1
  for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
            "intermediate_size", "max_position_embeddings"):
    if k not in cfg and k != "num_key_value_heads": raise UserError(f"{path / 'config.json'} lacks {k!r}")
    if not (is_int(v := cfg.get(k)) or v is None and k == "num_key_value_heads"):
      raise UserError(f"{path / 'config.json'}: {k} is {json.dumps(v)[:40]}, expected a positive integer")
  if not (isinstance(v := cfg.get("rms_norm_eps", 1e-6), (int, float)) and not isinstance(v, bool) and v > 0):
    raise UserError(f"{path / 'config.json'}: rms_norm_eps is {json.dumps(v)[:40]}, expected a positive number")
  for k, kind, name in (("rope_parameters", dict, "an object"), ("mlp_bias", bool, "true or false"),
                        ("tie_word_embeddings", bool, "true or false"), ("attention_bias", bool, "true or false")):
    if not isinstance(v := cfg.get(k), (kind, type(None))):
      raise UserError(f"{path / 'config.json'}: {k} is {json.dumps(v)[:40]}, expected {name}")
  try:
    need(cfg.get("model_type") == "llama", f"model_type {cfg.get('model_type')!r}")
    need(cfg.get("hidden_act", "silu") == "silu", f"hidden_act {cfg.get('hidden_act')!r}")
    theta = cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", ROPE_THETA))
    need(theta == ROPE_THETA and (cfg.get("rope_parameters") or {}).get("rope_type", "default") == "default"
         and not cfg.get("rope_scaling"), f"RoPE other than theta {ROPE_THETA:g} without scaling")
    need(not cfg.get("attention_bias"), "attention_bias")
    d, H = cfg["hidden_size"], cfg["num_attention_heads"]
    need(cfg.get("head_dim") in (None, d // H), f"head_dim {cfg.get('head_dim')}")
    args = dict(dim=d, n_layers=cfg["num_hidden_layers"], n_heads=H, n_kv_heads=cfg.get("num_key_value_heads") or H,
                vocab_size=cfg["vocab_size"], hidden_dim=cfg["intermediate_size"], max_seq_len=cfg["max_position_embeddings"],
                norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), dropout=0.0, ffn_bias=bool(cfg.get("mlp_bias", False)))
  except (KeyError, TypeError, AttributeError) as e: raise UserError(f"{path / 'config.json'} lacks or mistypes {e}") from None
  try: sd = load((path / "model.safetensors").read_bytes())
  except (OSError, SafetensorError) as e: raise UserError(f"cannot read {path / 'model.safetensors'}: {e}") from None
  if args["ffn_bias"]:
    for n in [n for n in sd if n.endswith(("up_proj.bias", "down_proj.bias"))]:
      need(not np.any(sd.pop(n)), f"a non-zero {n}")
  if "lm_head.weight" not in sd or cfg.get("tie_word_embeddings"): sd["lm_head.weight"] = sd.get("model.embed_tokens.weight")
  if not isinstance(L := args["n_layers"], int) or not 0 < L <= len(sd):  # before a name is made for each layer
    raise UserError(f"{path / 'config.json'}: num_hidden_layers={L!r}, but {path / 'model.safetensors'} holds {len(sd)} "
                    "tensors, too few for that many layers")
  to_ours = {h: n for n, h in hf_names(args["n_layers"]).items()}
  if unknown := [n for n in sd if n not in to_ours]: raise UserError(f"{path / 'model.safetensors'} has unknown tensors: {', '.join(unknown[:3])}")
  weights = {to_ours[n]: np.asarray(w, np.float32) for n, w in sd.items() if w is not None}
  for n, heads in (("wq", args["n_heads"]), ("wk", args["n_kv_heads"])):
    for i in range(args["n_layers"]):
      if (k := f"layers.{i}.attention.{n}.weight") in weights and weights[k].ndim == 2 and weights[k].shape[0] % (2 * heads) == 0:
        weights[k] = rotary_from_hf(weights[k], heads)
  return args, weights
