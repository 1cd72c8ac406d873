"""Build a tiny `qwen2_vl` vision-language model with random weights, fully offline.

No vision-language model ships in any PyPI package (FACTS.md), so the image
path is proven on this one: the contract, not the quality. The folder holds
what mlx-vlm's loader and processor read (config.json with a vision_config,
safetensors, tokenizer files, preprocessor and processor configs, a chat
template) and nothing is fetched: the tokenizer is a byte-level BPE with no
merges (256 byte tokens) plus Qwen2-VL's special tokens, built here with the
`tokenizers` library. A fixed seed makes two builds byte-identical.

    python -m serving models --build-tiny-vlm DIR
"""

from __future__ import annotations

import json
from pathlib import Path

SEED = 20261125

# Qwen2-VL's markup: the processor expands each image pad into one token per merged patch.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
# Tool-call markers are plain added tokens (shown as text), as in Qwen2.5.
TOOL_TOKENS = ("<tool_call>", "</tool_call>")

TEXT = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "max_position_embeddings": 8192,
        # Three rotary sections (time, height, width) that sum to half the head size (64 / 4 / 2).
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}}
VISION = {"model_type": "qwen2_vl", "depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2,
          "mlp_ratio": 2, "patch_size": 14, "spatial_patch_size": 14, "spatial_merge_size": 2,
          "temporal_patch_size": 2, "in_channels": 3}
# At most 64 merged patches (image tokens) per image, whatever its size.
IMAGE = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "min_pixels": 28 * 28,
         "max_pixels": 28 * 28 * 64, "image_mean": [0.48145466, 0.4578275, 0.40821073],
         "image_std": [0.26862954, 0.26130258, 0.27577711], "do_rescale": True,
         "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True}

# Written for this project: ChatML turns, Qwen-style tools in the system turn, image parts as
# vision markers. Content may be a string or a list of {"type": "text"|"image"} parts.
CHAT_TEMPLATE = """{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- elif content is not none -%}
{%- for part in content -%}
{%- if part.type == 'image' or part.type == 'image_url' -%}<|vision_start|><|image_pad|><|vision_end|>
{%- elif part.type == 'text' -%}{{ part.text }}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- set first_system = messages and messages[0].role == 'system' -%}
{%- if tools -%}
<|im_start|>system
{% if first_system %}{{ render(messages[0].content) }}{% else %}You are a helpful assistant.{% endif %}

# Tools

You may call one or more functions. Their signatures are inside <tools></tools>:
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>

For each call, reply with a JSON object inside <tool_call></tool_call> tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif first_system -%}
<|im_start|>system
{{ render(messages[0].content) }}<|im_end|>
{% endif -%}
{%- for message in messages -%}
{%- if not (loop.first and first_system) -%}
{%- if message.role == 'tool' -%}
<|im_start|>user
<tool_response>
{{ render(message.content) }}
</tool_response><|im_end|>
{% else -%}
<|im_start|>{{ message.role }}
{{ render(message.content) }}
{%- for tool_call in message.tool_calls or [] %}
{%- set call = tool_call.function if tool_call.function is defined else tool_call %}
<tool_call>
{"name": "{{ call.name }}", "arguments": {{ call.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<|im_start|>assistant
{% endif -%}"""


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes, in byte order (GPT-2's table)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shift = 0
    chars = {}
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + shift)
            shift += 1
    return [chars[b] for b in range(256)]


def build_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {ch: i for i, ch in enumerate(_byte_alphabet())}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    return tokenizer


def _config(ids: dict[str, int], vocab_size: int) -> dict:
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        **TEXT,
        "vocab_size": vocab_size,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_token_id": ids["<|vision_pad|>"],
        "vision_config": dict(VISION),
        "tiny_vlm": {"built_by": "serving.vision.tiny_model", "seed": SEED,
                     "note": "random weights: proves the image path, says nothing about quality"},
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _weights(config: dict) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm.models import qwen2_vl

    mx.random.seed(SEED)
    model_config = qwen2_vl.ModelConfig.from_dict(json.loads(json.dumps(config)))
    model_config.text_config = qwen2_vl.TextConfig.from_dict(model_config.text_config)
    model_config.vision_config = qwen2_vl.VisionConfig.from_dict(model_config.vision_config)
    model = qwen2_vl.Model(model_config)
    # Scaled down from mlx's default init so the tiny model's logits are not all ties.
    return {name: (value * 4).astype(mx.float32) if name.endswith("embed_tokens.weight") else value.astype(mx.float32)
            for name, value in tree_flatten(model.parameters())}


def build_tiny_vlm(folder: Path) -> Path:
    """Write the model into `folder` (created if needed) and return it."""
    import mlx.core as mx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    tokenizer.save(str(folder / "tokenizer.json"))
    ids = {t: tokenizer.token_to_id(t) for t in (*SPECIAL_TOKENS, *TOOL_TOKENS)}
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    config = _config(ids, vocab_size)
    _write_json(folder / "config.json", config)
    _write_json(folder / "generation_config.json",
                {"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]], "do_sample": False})
    _write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": TEXT["max_position_embeddings"],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        "extra_special_tokens": {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    })
    _write_json(folder / "special_tokens_map.json", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    _write_json(folder / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
    _write_json(folder / "preprocessor_config.json", {
        **IMAGE, "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor",
        "size": {"shortest_edge": IMAGE["min_pixels"], "longest_edge": IMAGE["max_pixels"]}})
    _write_json(folder / "processor_config.json", {"processor_class": "Qwen2VLProcessor"})
    mx.save_safetensors(str(folder / "model.safetensors"), _weights(config), metadata={"format": "mlx"})
    return folder


def main(folder: str) -> int:
    path = build_tiny_vlm(Path(folder))
    print(json.dumps({"path": str(path.resolve()), "model_type": "qwen2_vl", "seed": SEED}))
    return 0
