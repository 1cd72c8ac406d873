"""The one typed configuration object for a server process.

Everything the server does is decided here and passed down; nothing reads
module globals. Precedence: built-in defaults < profile (serving/profiles.toml)
< command-line flags.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

PROFILES_FILE = Path(__file__).with_name("profiles.toml")
# A verifying forward of 1 + N rows stays about one row's cost only while N is small (README).
MAX_LOOKUP_DRAFT = 16

BlasPolicy = Literal["auto", "shim", "openblas", "reference"]
MallocPolicy = Literal["auto", "jemalloc", "system"]
LookupPolicy = Literal["auto", "on", "off"]
OverCeiling = Literal["clamp", "reject"]
DivergenceAction = Literal["off", "warn", "serialize"]
DecodeStep = Literal["auto", "batch", "compiled"]
BurstPrefill = Literal["auto", "on", "off"]
PackedWeights = Literal["auto", "off"]


@dataclass(frozen=True)
class ServerConfig:
    model: str = "smollm2-135m"
    host: str = "127.0.0.1"
    port: int = 8000
    profile: str = "text-default"
    # An embedding model served beside the chat model on /v1/embeddings (catalog id or
    # local mlx-embeddings folder); None: the route answers that none is configured.
    embedding_model: str | None = None
    # Extra ids the model answers to; the first one is the id /v1/models reports.
    served_model_names: tuple[str, ...] = ()
    api_key: str | None = None
    # When on, a request naming another model is refused (404) instead of served.
    strict_model_id: bool = False
    # Agent clients ask for 32k tokens; a small model would then run for minutes.
    max_tokens_default: int = 512
    max_tokens_ceiling: int = 4096
    over_ceiling: OverCeiling = "clamp"
    # Sampling default when a request names no temperature. Greedy keeps runs
    # reproducible, like mlx_lm.server; OpenAI's own default would be 1.0.
    default_temperature: float = 0.0
    max_concurrency: int = 32
    # Prompts prefilled together when burst prefill is off (mlx-lm's 8).
    prefill_batch_size: int = 8
    prefill_step_size: int = 512
    # Burst prefill: an idle server's first request waits while more arrive within
    # admission_quiet_ms of each other (100 ms at most), and every waiting prompt prefills in one
    # batch, in bounded chunks. auto: on in a CPU's batch step (serving.backend.burst_prefill_runs).
    burst_prefill: BurstPrefill = "auto"
    admission_quiet_ms: float = 10.0
    # Float32 weights that are exactly a GGUF's Q4_1 or Q8_0 blocks (a model converted from one)
    # read as those blocks by the CPU's few-row kernel: the same floats from a fifth of the bytes
    # per decode step (serving/engine/packed_weights.py). auto: wherever the Linux CPU shim is.
    packed_weights: PackedWeights = "auto"
    # Requests waiting for a decode slot; beyond this a request gets 429 + Retry-After.
    max_queue: int = 64
    # KV caches of earlier prompts kept for reuse (0 turns the prefix cache off).
    prefix_cache_bytes: int = 1 << 30
    # Refused with 413 before anything is parsed or tokenised.
    max_body_bytes: int = 8 << 20
    # Which parser reads tool calls out of the model's text ("auto": from its chat template).
    tool_call_parser: str = "auto"
    # Which parser splits reasoning from the answer: auto (think if the chat template mentions
    # <think>), think, or none.
    reasoning_parser: str = "auto"
    # How tools reach the prompt: auto (the template if it renders tools, else a generic
    # system-prompt section), template, generic, or none.
    tool_prompt: str = "auto"
    # Wall-clock limit of one request, queueing included (0: none).
    request_timeout_s: float = 600.0
    # Waitress threads; each open request holds one, decoding or waiting, so the
    # default covers max_concurrency + max_queue plus headroom for health checks
    # (with fewer, waitress would queue requests where max_queue cannot see them).
    threads: int | None = None
    dtype: str = "auto"
    cache_dir: Path | None = None
    blas: BlasPolicy = "auto"
    # Linux: jemalloc preloaded where installed (auto), demanded (jemalloc), or glibc's (system);
    # serving.backend.choose_allocator says why.
    malloc: MallocPolicy = "auto"
    # Linux x86-64 CPU: MLX's CPU compiler (mx.compile's fused kernels) gets -mavx2 -mfma, the same
    # numbers faster (serving/cpu_jit.py; README "Speed on Linux CPU").
    cpu_jit_avx2: bool = True
    log_level: str = "info"
    # One JSON line per request on the mlx_proof.access logger: off, stderr, or a file path.
    access_log: str = "stderr"
    # With api_key set, /metrics needs the key too unless this is on (for a scraper without one).
    metrics_public: bool = False
    # Harness self-validation only: after each engine step, sleep this fraction
    # of the step's own duration, planting a known slowdown (0.1 costs ~10%).
    planted_slowdown: float = 0.0
    # Images (vision models only). Remote http(s) image URLs are fetched only when allowed,
    # and never from private, loopback, link-local or reserved addresses.
    allow_remote_media: bool = False
    max_images_per_request: int = 8
    max_image_bytes: int = 5 << 20
    max_image_pixels: int = 4096 * 4096
    remote_media_timeout_s: float = 10.0
    # Serialised greedy decoding: one sequence decodes at a time, start to finish; requests
    # asking for temperature > 0 get a 400; the prefix cache is off (README: "Deterministic serving").
    deterministic: bool = False
    # Batch-invariant decoding: every decode step has one shape (max_concurrency rows over a KV
    # buffer of batch_invariant_context positions per slot), so a sequence's numbers cannot
    # depend on its neighbours; prompts prefill alone; the prefix cache is off. The context
    # also caps prompt + completion (README: "Batch-invariant decoding").
    batch_invariant: bool = False
    batch_invariant_context: int = 2048
    # How a decode step runs: "batch", mlx-lm's BatchGenerator (eager); "compiled", our step
    # compiled per (rows, KV length) bucket, which saves the per-op launch cost that dominates a
    # small model on a GPU; "auto", compiled on MLX CUDA over float32 weights (where it was
    # measured to pay and keeps greedy tokens) and batch elsewhere. Both keep the prefix cache. The compiled step prefills prompts alone; its KV buffer
    # holds at most compiled_step_context positions per sequence (None: the model's context)
    # (README: "Compiled decode step").
    decode_step: DecodeStep = "auto"
    compiled_step_context: int | None = None
    # Prompt-lookup speculative decoding: while one greedy sequence decodes alone (the batch step
    # and the compiled step; not --batch-invariant), draft up to this many tokens from n-grams of
    # its prompt and answer and verify them in one forward; the tokens are unchanged where a
    # multi-token forward sums as one-token ones do (fp32 on the CPU, the compiled step's
    # per-token forms on CUDA; README: "Prompt-lookup decoding"). 0: off.
    lookup_draft: int = 4
    # Where lookup decoding runs: auto = the CPU backend, and the compiled step on MLX CUDA where its
    # verifying forward sums per token (fused_decode). In mlx-lm's batch step on CUDA it was
    # measured slower and moved greedy ties (README: "Prompt-lookup decoding"); on, to run it
    # anyway (Metal is unmeasured); off.
    lookup_decoding: LookupPolicy = "auto"
    # Batch-divergence monitor: off, warn (status + log), or serialize (decode one sequence at
    # a time from the first divergence until restart). Probes run only while requests decode.
    divergence_monitor: DivergenceAction = "off"
    divergence_probe_interval_s: float = 60.0
    divergence_probe_prompt: str | None = None  # None: the monitor's built-in prompt
    divergence_probe_tokens: int = 32
    # Speech-to-text model served beside the chat model (catalog id or folder; None: no
    # /v1/audio/transcriptions), and the limits of one upload: bytes as OpenAI's 25 MB, seconds.
    asr_model: str | None = None
    max_audio_bytes: int = 25 * 1000 * 1000
    max_audio_seconds: float = 600.0
    # A local mlx-audio text-to-speech model folder; None: /v1/audio/speech answers 501.
    tts_model: str | None = None

    @property
    def waitress_threads(self) -> int:
        return self.threads or self.max_concurrency + self.max_queue + 8

    @property
    def public_model_id(self) -> str | None:
        return self.served_model_names[0] if self.served_model_names else None

    def validate(self) -> "ServerConfig":
        problems = []
        if not 0 < self.port < 65536:
            problems.append(f"port {self.port} is not in 1..65535")
        if self.max_tokens_default <= 0 or self.max_tokens_ceiling <= 0:
            problems.append("max tokens default and ceiling must be positive")
        if self.max_tokens_default > self.max_tokens_ceiling:
            problems.append("max tokens default exceeds the ceiling")
        if self.max_concurrency <= 0 or self.prefill_batch_size <= 0:
            problems.append("max concurrency and prefill batch size must be positive")
        if not 0 <= self.admission_quiet_ms <= 1000:
            problems.append("admission quiet time must be between 0 and 1000 ms")
        if self.over_ceiling not in ("clamp", "reject"):
            problems.append(f"over_ceiling must be clamp or reject, not {self.over_ceiling!r}")
        if self.max_queue < 0 or self.prefix_cache_bytes < 0 or self.max_body_bytes <= 0:
            problems.append("max_queue and prefix_cache_bytes must be >= 0, max_body_bytes > 0")
        if self.tool_prompt not in ("auto", "template", "generic", "none"):
            problems.append(f"tool_prompt must be auto, template, generic or none, not {self.tool_prompt!r}")
        if self.request_timeout_s < 0:
            problems.append("request_timeout_s must be >= 0 (0: no limit)")
        if not 0 <= self.planted_slowdown <= 10:
            problems.append("planted_slowdown must be between 0 and 10")
        if not self.access_log.strip():
            problems.append("access_log must be off, stderr or a file path")
        if self.max_audio_bytes <= 0 or self.max_audio_seconds <= 0:
            problems.append("max_audio_bytes and max_audio_seconds must be positive")
        if self.blas not in ("auto", "shim", "openblas", "reference"):
            problems.append(f"blas must be auto, shim, openblas or reference, not {self.blas!r}")
        if self.lookup_decoding not in ("auto", "on", "off"):
            problems.append(f"lookup_decoding must be auto, on or off, not {self.lookup_decoding!r}")
        if self.malloc not in ("auto", "jemalloc", "system"):
            problems.append(f"malloc must be auto, jemalloc or system, not {self.malloc!r}")
        if self.max_images_per_request < 0 or self.max_image_bytes <= 0 or self.max_image_pixels <= 0:
            problems.append("max_images_per_request must be >= 0, max_image_bytes and max_image_pixels > 0")
        if self.remote_media_timeout_s <= 0:
            problems.append("remote_media_timeout_s must be positive")
        problems += _determinism_problems(self)
        if problems:
            raise ValueError("invalid server configuration: " + "; ".join(problems))
        return self


def _determinism_problems(c: ServerConfig) -> list[str]:
    problems = []
    if c.deterministic and c.default_temperature != 0:
        problems.append("deterministic serving is greedy: the default temperature must be 0")
    if c.deterministic and c.prefix_cache_bytes:
        problems.append("deterministic serving keeps the prefix cache off (a cached prefix can change "
                        "numerics against a fresh prefill); drop prefix_cache_bytes")
    if c.batch_invariant and c.deterministic:
        problems.append("--batch-invariant and --deterministic are two answers to one problem: choose one")
    if c.batch_invariant and c.prefix_cache_bytes:
        problems.append("batch-invariant decoding prefills every prompt alone, so the prefix cache stays "
                        "off; drop prefix_cache_bytes")
    if c.batch_invariant_context < 16:
        problems.append("batch_invariant_context must be at least 16 tokens")
    if c.decode_step not in ("auto", "batch", "compiled"):
        problems.append(f"decode_step must be auto, batch or compiled, not {c.decode_step!r}")
    if c.decode_step == "compiled" and (c.deterministic or c.batch_invariant):
        problems.append("--decode-step compiled is the fast batched step; --deterministic and --batch-invariant "
                        "choose their own: drop one")
    if not 0 <= c.lookup_draft <= MAX_LOOKUP_DRAFT:
        problems.append(f"lookup_draft must be 0 (off) to {MAX_LOOKUP_DRAFT} tokens")
    if c.compiled_step_context is not None and c.compiled_step_context < 16:
        problems.append("compiled_step_context must be at least 16 tokens")
    if c.divergence_monitor not in ("off", "warn", "serialize"):
        problems.append(f"divergence_monitor must be off, warn or serialize, not {c.divergence_monitor!r}")
    if c.divergence_probe_interval_s <= 0 or c.divergence_probe_tokens <= 0:
        problems.append("divergence_probe_interval_s and divergence_probe_tokens must be positive")
    if c.divergence_probe_prompt is not None and not c.divergence_probe_prompt.strip():
        problems.append("divergence_probe_prompt must not be empty")
    return problems


# Flags that change nothing unless another flag has a value: (that flag, the value). Evidence
# matching ignores them otherwise (the compiled step's cap under the batch step, say).
INERT_UNLESS = {"compiled_step_context": ("decode_step", "compiled"),
                "batch_invariant_context": ("batch_invariant", True)}


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, dict[str, Any]]:
    with path.open("rb") as fh:
        return tomllib.load(fh).get("profile", {})


def profile_flags(name: str, *, path: Path = PROFILES_FILE) -> dict[str, Any]:
    profiles = load_profiles(path)
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ValueError(f"unknown profile {name!r}; known profiles: {known}")
    # A client launch profile lays its own flags over the serving profile it names.
    parent = profiles[name].get("serving")
    if parent == name:
        raise ValueError(f"profile {name!r} names itself as its serving profile")
    inherited = profile_flags(parent, path=path) if parent else {}
    return {**inherited, **profiles[name].get("serve", {})}


def build_config(overrides: dict[str, Any], *, profiles_path: Path = PROFILES_FILE) -> ServerConfig:
    """Merge defaults, the chosen profile's serve flags and explicit overrides."""
    explicit = {k: v for k, v in overrides.items() if v is not None}
    profile = explicit.get("profile", ServerConfig.profile)
    merged = {**profile_flags(profile, path=profiles_path), **explicit}
    known = {f.name for f in dataclasses.fields(ServerConfig)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValueError(f"unknown configuration keys: {', '.join(unknown)}")
    if "served_model_names" in merged:
        merged["served_model_names"] = tuple(merged["served_model_names"])
    ceiling = merged.get("max_tokens_ceiling", ServerConfig.max_tokens_ceiling)
    if "max_tokens_default" not in merged and ceiling < ServerConfig.max_tokens_default:
        merged["max_tokens_default"] = ceiling  # a lower ceiling alone lowers the default with it
    # Implied by either mode; a size given on the command line is refused, and so is one a profile
    # sets beside the mode, but --deterministic / --batch-invariant override a profile's cache size.
    mode = ("deterministic" if merged.get("deterministic") else "batch_invariant" if merged.get("batch_invariant")
            else None)
    if mode and "prefix_cache_bytes" not in explicit and (explicit.get(mode) or "prefix_cache_bytes" not in merged):
        merged["prefix_cache_bytes"] = 0
    if merged.get("cache_dir") is not None:
        merged["cache_dir"] = Path(merged["cache_dir"])
    return ServerConfig(**merged).validate()
