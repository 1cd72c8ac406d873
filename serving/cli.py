"""`mlx-proof` command line: serve, list the model catalog, check the BLAS."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .config import ServerConfig, build_config


def _serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model on an OpenAI-compatible API")
    d = ServerConfig()
    p.add_argument("--model", help=f"catalog id or local MLX/HF folder (default {d.model})")
    p.add_argument("--embedding-model",
                   help="also serve this embedding model on /v1/embeddings: catalog id (all-minilm-l6-v2) "
                        "or local mlx-embeddings folder (default: none)")
    p.add_argument("--host", help=f"bind address (default {d.host})")
    p.add_argument("--port", type=int, help=f"port (default {d.port})")
    p.add_argument("--profile", help=f"serving profile from serving/profiles.toml (default {d.profile})")
    p.add_argument("--list-profiles", action="store_true",
                   help="list the profiles, their flags, and per model whether evidence publishes them; then exit")
    p.add_argument("--served-model-name", dest="served_model_names", action="append",
                   help="id(s) the model answers to; repeat for aliases; the first is reported")
    p.add_argument("--api-key", default=os.environ.get("MLX_PROOF_API_KEY"),
                   help="require this key (Bearer or x-api-key) on every route but /health")
    p.add_argument("--strict-model-id", action="store_true", default=None,
                   help="refuse requests that name a model this server does not serve")
    p.add_argument("--max-tokens", dest="max_tokens_default", type=int,
                   help=f"output tokens when a request names none (default {d.max_tokens_default})")
    p.add_argument("--max-tokens-ceiling", type=int,
                   help=f"most output tokens one request may get (default {d.max_tokens_ceiling})")
    p.add_argument("--over-ceiling", choices=["clamp", "reject"],
                   help="what to do with a request above the ceiling (default clamp)")
    p.add_argument("--temperature", dest="default_temperature", type=float,
                   help="temperature when a request names none (default 0: greedy)")
    p.add_argument("--max-concurrency", type=int, help="sequences decoded together")
    p.add_argument("--prefill-batch-size", type=int,
                   help=f"prompts prefilled together without burst prefill (default {d.prefill_batch_size})")
    p.add_argument("--prefill-step-size", type=int)
    p.add_argument("--burst-prefill", choices=["auto", "on", "off"],
                   help="an idle server gathers a burst of requests and prefills every waiting prompt in "
                        "one batch (auto: on a CPU's batch step)")
    p.add_argument("--admission-quiet-ms", type=float,
                   help=f"burst prefill: wait while requests arrive within this many ms of each other, "
                        f"100 ms at most (default {d.admission_quiet_ms:g})")
    p.add_argument("--packed-weights", choices=["auto", "off"],
                   help="CPU: read float32 weights that are exactly a GGUF's Q4_1 or Q8_0 blocks as those "
                        "blocks in decode steps: the same numbers from a fifth of the bytes (default auto)")
    p.add_argument("--max-queue", type=int,
                   help=f"requests that may wait for a decode slot; more get 429 (default {d.max_queue})")
    p.add_argument("--prefix-cache-bytes", type=int,
                   help=f"bytes of KV cache kept for prompt-prefix reuse; 0 turns it off (default {d.prefix_cache_bytes})")
    p.add_argument("--max-body-bytes", type=int,
                   help=f"largest request body; larger gets 413 before parsing (default {d.max_body_bytes})")
    p.add_argument("--request-timeout", dest="request_timeout_s", type=float,
                   help=f"seconds one request may take, queueing included; 0 for none (default {d.request_timeout_s:g})")
    p.add_argument("--tool-call-parser",
                   help="how tool calls are read from the model's text: auto (from its chat template), "
                        "hermes, json, llama3, mistral, pythonic, lfm (default auto)")
    p.add_argument("--reasoning-parser", choices=["auto", "think", "none"],
                   help="how reasoning is split from the answer: think (<think>...</think>), none, or auto "
                        "(think if the chat template mentions <think>; default)")
    p.add_argument("--tool-prompt", choices=["auto", "template", "generic", "none"],
                   help="how tools reach the prompt: the chat template, a generic system-prompt section, "
                        "or not at all (default auto: the template if it renders tools)")
    p.add_argument("--asr-model",
                   help="speech-to-text model served on /v1/audio/transcriptions beside the chat model: "
                        "catalog id (whisper-tiny.en) or a local mlx-audio Whisper folder (default: none)")
    p.add_argument("--max-audio-bytes", type=int,
                   help=f"largest audio upload in bytes (default {d.max_audio_bytes}, OpenAI's 25 MB)")
    p.add_argument("--max-audio-seconds", type=float,
                   help=f"longest audio one transcription request may carry (default {d.max_audio_seconds:g})")
    p.add_argument("--tts-model",
                   help="a local mlx-audio text-to-speech model folder for /v1/audio/speech (default: none, "
                        "and the route answers 501)")
    p.add_argument("--threads", type=int, help="waitress threads (default max-concurrency + 8)")
    p.add_argument("--dtype", help="weights dtype for converted models (default: by backend)")
    p.add_argument("--cache-dir", help="where converted models are kept")
    p.add_argument("--blas", choices=["auto", "shim", "openblas", "reference"],
                   help="Linux CPU: shim = the cblas shim over PyPI's scipy-openblas32 (built once with the C "
                        "compiler), openblas = the system's OpenBLAS, reference = mlx's bundled BLAS; auto tries "
                        "them in that order")
    p.add_argument("--malloc", choices=["auto", "jemalloc", "system"],
                   help="Linux: the allocator the server runs on. jemalloc = Debian's libjemalloc2, preloaded "
                        "(MLX's CPU backend frees each buffer on another thread than the one that allocated it, "
                        "which glibc's malloc pays for on every op); system = glibc's malloc; auto (default) = "
                        "jemalloc where it is installed")
    p.add_argument("--cpu-jit-avx2", action=argparse.BooleanOptionalAction, default=None,
                   help="Linux x86-64 CPU: compile MLX's fused CPU kernels with AVX2 and FMA when this CPU has "
                        "them (the same numbers, faster; default on)")
    p.add_argument("--log-level", help="debug, info, warning")
    p.add_argument("--access-log", help="one JSON line per request: off, stderr, or a file path (default stderr)")
    p.add_argument("--metrics-public", action="store_true", default=None,
                   help="serve /metrics without the API key (for a Prometheus scraper); other routes keep it")
    p.add_argument("--allow-remote-media", action="store_true", default=None,
                   help="vision models: fetch http(s) image URLs (never from private or loopback addresses)")
    p.add_argument("--max-images", dest="max_images_per_request", type=int,
                   help=f"most images in one request (default {d.max_images_per_request})")
    p.add_argument("--max-image-bytes", type=int, help=f"largest encoded image (default {d.max_image_bytes})")
    p.add_argument("--max-image-pixels", type=int,
                   help=f"largest image, width x height (default {d.max_image_pixels})")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="serialised greedy decoding: one sequence at a time, temperature > 0 refused, "
                        "prefix cache off; identical requests give identical tokens whatever else is served")
    p.add_argument("--batch-invariant", action="store_true", default=None,
                   help="batched greedy decoding whose output is identical to decoding alone: every step "
                        "has one shape (max-concurrency rows, fixed KV length), prompts prefill alone, "
                        "prefix cache off")
    p.add_argument("--batch-invariant-context", type=int,
                   help=f"KV positions per sequence under --batch-invariant, prompt + completion "
                        f"(default {d.batch_invariant_context})")
    p.add_argument("--decode-step", choices=["auto", "batch", "compiled"],
                   help="auto: compiled on MLX CUDA over float32 weights, batch elsewhere (default); batch: mlx-lm's BatchGenerator "
                        "with our fused step, eager; compiled: our decode step compiled per rows x KV-length "
                        "bucket, faster where op launches dominate (a small model on a GPU). Both keep the "
                        "prefix cache")
    p.add_argument("--compiled-step-context", type=int,
                   help="KV positions per sequence in the compiled step, prompt + completion "
                        "(default: the model's context)")
    p.add_argument("--lookup-draft", type=int,
                   help=f"prompt-lookup speculative decoding for a greedy sequence decoding alone: draft up to N "
                        f"tokens from its own prompt and answer, verify them in one forward (tokens unchanged in fp32 on the CPU "
                        f"and in the compiled step on CUDA); "
                        f"0: off (default {d.lookup_draft}; not under --batch-invariant or --deterministic)")
    p.add_argument("--lookup-decoding", choices=["auto", "on", "off"],
                   help="where prompt-lookup decoding runs: auto = the CPU backend, and --decode-step compiled on CUDA "
                        "where its verifying forward sums each token as a one-token step (not mlx-lm's batch step on "
                        "CUDA: slower there, and it moved greedy ties), on = everywhere, off (default auto)")
    p.add_argument("--divergence-monitor", choices=["off", "warn", "serialize"],
                   help="probe batched against serial greedy decoding while traffic runs: warn, or "
                        "serialize decoding after a divergence until restart (default off)")
    p.add_argument("--divergence-probe-interval", dest="divergence_probe_interval_s", type=float,
                   help=f"seconds between probes (default {d.divergence_probe_interval_s:g})")
    p.add_argument("--divergence-probe-prompt", help="the probe's fixed prompt text (default: a built-in one)")
    p.add_argument("--divergence-probe-tokens", type=int,
                   help=f"tokens each probe decodes and compares (default {d.divergence_probe_tokens})")
    p.add_argument("--planted-slowdown", type=float,
                   help="harness self-validation: slow every engine step by this fraction (0.1 = 10%%)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv = ["serve", *argv]
    parser = argparse.ArgumentParser(prog="mlx-proof", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    models = sub.add_parser("models", help="list the offline model catalog")
    models.add_argument("--resolve", metavar="MODEL",
                        help="fetch and convert MODEL if needed, then print its folder as JSON")
    models.add_argument("--dtype", default="auto")
    models.add_argument("--cache-dir")
    models.add_argument("--build-tiny-vlm", metavar="DIR",
                        help="write a tiny random-weight qwen2_vl model into DIR (for tests of the image path)")
    models.add_argument("--random-weights", nargs=2, metavar=("SOURCE", "TARGET"),
                        help="write a model with SOURCE's architecture and tokenizer but random weights into "
                             "TARGET (numerical evidence where real weights cannot travel); --dtype, --seed")
    models.add_argument("--seed", type=int, default=0)
    models.add_argument("--json", action="store_true", help="the catalog as JSON: id -> sha256, source, kind")
    profiles = sub.add_parser("profiles", help="the profiles in serving/profiles.toml, fully resolved")
    profiles.add_argument("--json", action="store_true", help="as JSON (what the harness matches evidence to)")
    profiles.add_argument("--file", help="another profiles file (tests); default serving/profiles.toml")
    sub.add_parser("blas-check", help="measure matmul speed with each BLAS this machine has")
    args = parser.parse_args(argv)
    if args.command == "models" and args.random_weights:
        from .convert.random_weights import build_random_model
        dtype = "float32" if args.dtype == "auto" else args.dtype
        print(build_random_model(*args.random_weights, dtype=dtype, seed=args.seed))
        return 0
    if args.command == "models" and args.build_tiny_vlm:
        from .vision.tiny_model import main as build_tiny_vlm
        return build_tiny_vlm(args.build_tiny_vlm)
    if args.command == "profiles":
        from .config import PROFILES_FILE
        from .profile_status import list_profiles, profiles_document
        path = Path(args.file) if args.file else PROFILES_FILE
        if args.json:
            print(json.dumps(profiles_document(path), indent=1, sort_keys=True))
            return 0
        return list_profiles(path=path)
    if args.command == "models":
        from .catalog_listing import print_catalog, print_catalog_json, print_resolved
        if args.json:
            return print_catalog_json()
        if args.resolve:
            return print_resolved(args.resolve, dtype=args.dtype, cache_dir=args.cache_dir)
        return print_catalog()
    if args.command == "blas-check":
        from .blas_check import main as blas_main
        return blas_main()
    return _serve(args, argv)


def _serve(args: argparse.Namespace, argv: list[str]) -> int:
    from .backend import ALLOCATOR_ENV, BLAS_NOTE_ENV, choose_allocator, choose_preload, reexec_with_preload

    if args.list_profiles:
        from .profile_status import list_profiles
        return list_profiles()
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "list_profiles")}
    try:
        config = build_config(overrides)
    except ValueError as exc:
        print(f"mlx-proof: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        preload, note = choose_preload(config.blas, environ=dict(os.environ), cache_dir=config.cache_dir)
        allocator, allocator_note = choose_allocator(config.malloc, environ=dict(os.environ))
    except RuntimeError as exc:
        print(f"mlx-proof: {exc}", file=sys.stderr)
        return 2
    if preload is not None or allocator is not None:
        reexec_with_preload(preload, argv, allocator=allocator, allocator_note=allocator_note)
    if note:
        os.environ[BLAS_NOTE_ENV] = note  # what /health reports beside the BLAS it names
    if allocator_note:
        os.environ[ALLOCATOR_ENV] = allocator_note
    from .catalog import default_cache_dir
    from .cpu_jit import arrange

    jit = arrange(config.cache_dir or default_cache_dir(), enabled=config.cpu_jit_avx2)
    logging.getLogger("mlx_proof").info("MLX CPU compiler: %s", jit.describe())
    config = _announce_profile(config)
    from .app import serve
    from .convert.wheels import FetchError

    try:
        serve(config)
    except (ValueError, FetchError) as exc:  # unknown model, checksum mismatch, fetch failure
        print(f"mlx-proof: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _announce_profile(config):
    """Whether evidence publishes this profile for this model (a warning, never a refusal), and for a
    client launch profile its key and how to point the client at us."""
    from .profile_status import launch_hint, publication_notice, with_profile_auth

    log = logging.getLogger("mlx_proof.profile")
    notice = publication_notice(config)
    if notice is not None:
        level, message = notice
        (log.warning if level == "warning" else log.info)(message)
    config, made_key = with_profile_auth(config)
    if made_key:
        log.warning("profile %s needs an API key and none was given (--api-key or MLX_PROOF_API_KEY): "
                    "using %s for this run", config.profile, config.api_key)
    for line in launch_hint(config):
        log.info(line)
    return config
