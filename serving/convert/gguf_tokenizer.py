"""Rebuild a Hugging Face tokenizer folder from a GGUF file's metadata.

A GGUF carries no tokenizer.json, only llama.cpp's vocabulary keys. transformers knows how to
turn those into a `tokenizers.Tokenizer`, but its one-call entry point (`get_gguf_tokenizer`)
imports torch, which this project must not need. So we read the keys with gguf's own reader
and hand them to transformers' torch-free builder (`convert_gguf_tokenizer`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Special-token texts that end a turn. llama.cpp treats these as end-of-generation even
# when the file's single eos id names another one (Qwen: eos is <|im_end|>, but base-style
# completions end in <|endoftext|>); without them mlx-lm would run on to max_tokens.
_END_OF_TURN_TEXTS = frozenset(
    {
        "<|endoftext|>",
        "<|im_end|>",
        "<|eot_id|>",
        "<|eom_id|>",
        "<|end|>",
        "<end_of_turn>",
        "<|end_of_text|>",
        "<EOT>",
    }
)
_CONTROL = 3  # llama.cpp token type for special/control tokens


def _transformers_gguf():
    """transformers' GGUF tokenizer tables and builder: in integrations.gguf.gguf_tokenizer_mapping
    from 5.20, in integrations.ggml before (4.50 to 5.17 were checked)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never let transformers reach for a hub
    try:
        from transformers.integrations.gguf import gguf_tokenizer_mapping as module
        if hasattr(module, "GGUF_TOKENIZER_MAPPING"):  # 5.17 has the module without the table
            return module
    except ImportError:
        pass
    from transformers.integrations import ggml
    return ggml


def _field(reader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def read_tokenizer_metadata(reader) -> tuple[dict, dict]:
    """`(tokenizer_dict, tokenizer_config)` in the shape transformers' GGUF builder expects."""
    grouped = {}
    for group, renames in _transformers_gguf().GGUF_TOKENIZER_MAPPING.items():
        values = {name: _field(reader, f"tokenizer.{key}") for key, name in renames.items()}
        grouped[group] = {name: value for name, value in values.items() if value is not None}
    tokenizer, config = grouped["tokenizer"], grouped["tokenizer_config"]
    # transformers before 5.20 does not carry llama.cpp's pre-tokenizer name, which
    # _fix_pre_tokenizer reads
    if "pre_tokenizer_type" not in tokenizer and (pre := _field(reader, "tokenizer.ggml.pre")) is not None:
        tokenizer["pre_tokenizer_type"] = pre
    if "tokens" not in tokenizer:
        raise ValueError("GGUF file has no tokenizer.ggml.tokens; cannot rebuild its tokenizer")
    if tokenizer.get("tokenizer_type") == "llama":
        # llama.cpp adds BOS for sentencepiece vocabularies that do not say otherwise.
        config.setdefault("add_bos_token", True)
    return tokenizer, config


def _token(tokenizer_dict: dict, key: str) -> str | None:
    token_id = tokenizer_dict.get(key)
    return None if token_id is None else tokenizer_dict["tokens"][token_id]


def eos_token_ids(tokenizer_dict: dict) -> list[int]:
    """The file's eos id first, then every control token that ends a turn."""
    ids = [tokenizer_dict["eos_token_id"]] if "eos_token_id" in tokenizer_dict else []
    types = tokenizer_dict.get("token_type") or ()
    for index, (text, kind) in enumerate(zip(tokenizer_dict["tokens"], types, strict=False)):
        if kind == _CONTROL and text in _END_OF_TURN_TEXTS and index not in ids:
            ids.append(index)
    return ids


def _fix_pre_tokenizer(backend, pre_type: str | None) -> None:
    """Patch splits transformers' table lacks.

    SmolLM ("smollm") splits every digit on its own before byte-level BPE (its upstream
    tokenizer.json: Digits(individual) + ByteLevel); transformers falls back to GPT-2's
    regex, which keeps digit runs together.
    """
    from tokenizers import pre_tokenizers

    if pre_type == "smollm":
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )


def _set_bos(backend, bos: str | None, bos_id: int | None, *, add_bos: bool) -> None:
    """Make the tokenizer add BOS exactly when the GGUF says llama.cpp would."""
    from tokenizers import processors

    if add_bos and bos is not None and bos_id is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0",
            pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, bos_id)],
        )
    else:
        backend.post_processor = processors.TemplateProcessing(
            single="$A:0", pair="$A:0 $B:1", special_tokens=[]
        )


def build_backend_tokenizer(architecture: str, tokenizer_dict: dict, tokenizer_config: dict):
    """A `tokenizers.Tokenizer` equivalent to the one llama.cpp builds from this file."""
    backend, _ = _transformers_gguf().convert_gguf_tokenizer(architecture, tokenizer_dict)
    _fix_pre_tokenizer(backend, tokenizer_dict.get("pre_tokenizer_type"))
    _set_bos(
        backend,
        _token(tokenizer_dict, "bos_token_id"),
        tokenizer_dict.get("bos_token_id"),
        add_bos=bool(tokenizer_config.get("add_bos_token", False)),
    )
    return backend


def _tokenizer_config_json(
    tokenizer_dict: dict, tokenizer_config: dict, *, model_max_length: int
) -> dict:
    config = {
        # Understood by transformers 4.x and 5.x alike; the real work is in tokenizer.json.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": _token(tokenizer_dict, "bos_token_id"),
        "eos_token": _token(tokenizer_dict, "eos_token_id"),
        "unk_token": _token(tokenizer_dict, "unk_token_id"),
        "pad_token": _token(tokenizer_dict, "pad_token_id"),
        "add_bos_token": bool(tokenizer_config.get("add_bos_token", False)),
        "add_eos_token": bool(tokenizer_config.get("add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
    }
    if "chat_template" in tokenizer_config:
        config["chat_template"] = tokenizer_config["chat_template"]
    return config


def write_tokenizer_files(
    reader, out_dir: Path, *, architecture: str, model_max_length: int
) -> dict:
    """Write tokenizer.json + tokenizer_config.json; return the special ids for config.json."""
    tokenizer_dict, tokenizer_config = read_tokenizer_metadata(reader)
    backend = build_backend_tokenizer(architecture, tokenizer_dict, tokenizer_config)
    backend.save(str(out_dir / "tokenizer.json"))
    config = _tokenizer_config_json(
        tokenizer_dict, tokenizer_config, model_max_length=model_max_length
    )
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return {
        "bos_token_id": tokenizer_dict.get("bos_token_id"),
        "eos_token_ids": eos_token_ids(tokenizer_dict),
        "pad_token_id": tokenizer_dict.get("pad_token_id"),
        "vocab_size": len(tokenizer_dict["tokens"]),
    }
