"""Wire config, engine and resources into a Falcon app, and serve it on waitress."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import falcon

from .api import anthropic, openai, responses
from .api.auth import ApiKeyMiddleware
from .api.constrain import LazyBuilder
from .api.tool_prompt import template_renders_tools
from .api.dialect import Dialect, ServeContext, ServedModel
from .api.errors import install_error_handlers
from .api.request_body import BodyLimit
from .api.openai.embeddings import Embeddings
from .api.resources import Generate, Health, Models, NotFound, Root, speaks_anthropic
from .api.audio import Speech, Transcriptions
from .speech.startup import NO_SPEECH, SpeechModels, start_speech
from .config import ServerConfig
from .engine.divergence_monitor import monitor_settings
from .engine.loop import Engine, EngineSettings
from .parsers.reasoning import choose_reasoning_parser
from .parsers.tools import choose_parser
from .telemetry import MetricsResource, Telemetry, configure_access_log
from .vision import vision_engine_for

log = logging.getLogger("mlx_proof")

# While a long prompt prefills, streams send a keep-alive this often; the encoder
# decides what it is (Anthropic's ping; nothing for OpenAI).
KEEPALIVE_S = 5.0

# route -> dialect; the dialect also owns the error shape of every path under its route.
GENERATION_ROUTES: tuple[tuple[str, Dialect], ...] = (
    ("/v1/messages", anthropic.MESSAGES),
    ("/v1/chat/completions", openai.CHAT),
    ("/v1/completions", openai.COMPLETIONS),
    ("/v1/responses", responses.RESPONSES),
)


def renderer_for(req):
    """The dialect that owns a request: its route's, or for the shared models routes the
    one its headers speak (Anthropic's SDK sends anthropic-version)."""
    for route, dialect in GENERATION_ROUTES:
        if req.path.startswith(route):
            return dialect.render_error
    if req.path.startswith("/v1/models") and speaks_anthropic(req):
        return anthropic.MESSAGES.render_error
    return openai.error_body


def serve_context(config: ServerConfig, tokenizer, served: ServedModel, constraints=None) -> ServeContext:
    """What every dialect shares, with the tool parser and tool prompt chosen once for this model."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str):
        template = None
    parser = choose_parser(config.tool_call_parser, chat_template=template,
                           tool_call_start=getattr(tokenizer, "tool_call_start", None))
    return ServeContext(tokenizer, served, config, tool_parser=parser, tool_prompt=config.tool_prompt,
                        template_tools=template_renders_tools(template),
                        constraints=constraints or LazyBuilder(tokenizer),
                        reasoning_parser=choose_reasoning_parser(config.reasoning_parser, chat_template=template))


def create_app(config: ServerConfig, engine, served: ServedModel, backend: dict, *,
               constraints=None, embeddings=None, speech: SpeechModels = NO_SPEECH) -> falcon.App:
    """Build the app from injected parts, so tests can pass a fake engine (and a fake grammar builder,
    a fake embedding service and fake speech models)."""
    # Telemetry first: it must see every request, including those refused by the others.
    telemetry = Telemetry(engine, access_log=config.access_log != "off",
                          known_routes=[*(r for r, _ in GENERATION_ROUTES), "/v1/messages/count_tokens",
                                        "/v1/models", "/v1/embeddings", "/v1/audio/transcriptions",
                                        "/v1/audio/speech", "/metrics"])
    # An audio upload may be larger than a JSON body; 64 KiB more leaves room for the form fields.
    upload_limit = (config.max_audio_bytes + (64 << 10), "--max-audio-bytes")
    middleware = [telemetry, BodyLimit(config.max_body_bytes, per_path={"/v1/audio/transcriptions": upload_limit})]
    if config.api_key:
        middleware.append(ApiKeyMiddleware(config.api_key, also_open=("/metrics",) if config.metrics_public else ()))
    app = falcon.App(middleware=middleware)
    install_error_handlers(app, renderer_for)
    ctx = serve_context(config, engine.tokenizer, served, constraints)
    ctx.vision = getattr(engine, "vision", None)  # a vision engine's image prompter; text engines have none
    # Each app keeps its own responses for previous_response_id; the table's dialect keeps none.
    per_app = {"/v1/responses": responses.with_store(responses.ResponseStore())}
    for route, dialect in GENERATION_ROUTES:
        app.add_route(route, Generate(per_app.get(route, dialect), engine, ctx, idle_s=KEEPALIVE_S))
    app.add_route("/v1/messages/count_tokens", anthropic.CountTokens(ctx))
    embedding_route = Embeddings(embeddings, config)
    app.add_route("/v1/embeddings", embedding_route)
    app.add_route("/v1/audio/transcriptions", Transcriptions(
        speech.asr, model_ids=(speech.asr_id,) if speech.asr_id else (), languages=speech.asr_languages,
        config=config))
    app.add_route("/v1/audio/speech", Speech(speech.tts, config=config))
    embedding_ids = embedding_route.served.ids if embedding_route.served else ()
    models = Models(served, (*embedding_ids, *speech.model_ids))
    app.add_route("/v1/models", models)
    app.add_route("/v1/models/{model_id}", models, suffix="one")
    app.add_route("/health", Health(engine, served, backend, config, embeddings=embeddings))
    app.add_route("/metrics", MetricsResource(telemetry.registry))
    app.add_route("/", Root(served))
    app.add_sink(NotFound(), "/")
    return app


def engine_settings(config: ServerConfig, backend: str, *, model_context: int | None = None) -> EngineSettings:
    from .backend import burst_prefill_runs, decode_step_for, lookup_runs

    step = decode_step_for(config.decode_step, backend, one_at_a_time=config.deterministic or config.batch_invariant)
    lookup = lookup_runs(config.lookup_decoding, backend, step) and not config.deterministic
    one_by_one = step != "batch" or config.batch_invariant or config.deterministic
    burst = burst_prefill_runs(config.burst_prefill, backend, one_by_one=one_by_one)
    return EngineSettings(
        max_concurrency=config.max_concurrency,
        prefill_batch_size=config.max_concurrency if burst else config.prefill_batch_size,
        prefill_step_size=config.prefill_step_size,
        max_queue=config.max_queue,
        admission_quiet_s=config.admission_quiet_ms / 1000 if burst else 0.0,
        prefix_cache_bytes=config.prefix_cache_bytes,
        planted_slowdown=config.planted_slowdown,
        deterministic=config.deterministic,
        batch_invariant_context=config.batch_invariant_context if config.batch_invariant else None,
        compiled_step_context=((config.compiled_step_context or model_context or DEFAULT_CONTEXT)
                               if step == "compiled" else None),
        decode_step_auto=config.decode_step == "auto",
        # --deterministic keeps mlx-lm's one-token step, which its reproducibility evidence was made with
        lookup_draft=config.lookup_draft if lookup else 0,
        lookup_exact_only=config.lookup_decoding == "auto",
        lean_step=not config.deterministic,
        packed_weights=config.packed_weights,
        monitor=monitor_settings(config),
    )


DEFAULT_CONTEXT = 4096  # a model whose config names no context length


def model_context(model_path: Path) -> int:
    """The context length the model's config.json declares."""
    model_config = json.loads((Path(model_path) / "config.json").read_text())
    return int(model_config.get("max_position_embeddings")
               or model_config.get("text_config", {}).get("max_position_embeddings") or DEFAULT_CONTEXT)


def served_model(config: ServerConfig, resolved, tokenizer, settings: EngineSettings, *, context: int) -> ServedModel:
    """What the API says of the model; `context` is model_context's, capped here by the step's KV buffer."""
    public = config.public_model_id or resolved.model_id
    if config.batch_invariant:  # the fixed KV buffer holds prompt and completion together
        context = min(context, config.batch_invariant_context)
    elif settings.compiled_step_context is not None:
        context = min(context, settings.compiled_step_context)  # so does the compiled step's, at its largest bucket
    aliases = tuple(dict.fromkeys(n for n in (*config.served_model_names, resolved.model_id) if n != public))
    return ServedModel(
        model_id=public,
        aliases=aliases,
        context_length=context,
        vocab_size=len(tokenizer.get_vocab()),
        weights_sha256=resolved.weights_sha256,
        source=resolved.source,
    )


def serve(config: ServerConfig) -> None:
    from waitress import serve as waitress_serve

    from .backend import default_dtype, detect_backend
    from .catalog import default_cache_dir, resolve_model

    configure_access_log(config.access_log)
    backend = detect_backend()
    dtype = default_dtype(backend.backend) if config.dtype == "auto" else config.dtype
    log.info("backend %s, device %s, BLAS %s", backend.backend, backend.device, backend.blas)
    resolved = resolve_model(config.model, cache_dir=config.cache_dir or default_cache_dir(),
                             dtype=dtype, progress=lambda msg: log.info("%s", msg), kind="chat")
    # Models served beside the chat model start first: they are small, and a bad
    # --embedding-model or --asr-model should fail before the chat model loads.
    speech = start_speech(config, dtype=dtype, cache_dir=config.cache_dir or default_cache_dir(),
                          progress=lambda msg: log.info("%s", msg))
    embeddings = None
    if config.embedding_model:
        from .embeddings import open_embeddings
        embeddings = open_embeddings(config.embedding_model, cache_dir=config.cache_dir or default_cache_dir(),
                                     dtype=dtype, progress=lambda msg: log.info("%s", msg))
        log.info("embedding model %s (%s), %d dimensions", embeddings.info.model_id, embeddings.info.source,
                 embeddings.info.dimensions)

    def load():
        from mlx_lm import load as mlx_load
        return mlx_load(str(resolved.path))

    context = model_context(resolved.path)
    settings = engine_settings(config, backend.backend, model_context=context)
    engine = vision_engine_for(resolved.path, settings) or Engine(load, settings)
    try:
        engine.start()
    except RuntimeError as exc:  # the model did not load (e.g. a mode it cannot run): a clean exit 2
        raise ValueError(str(exc)) from exc
    served = served_model(config, resolved, engine.tokenizer, engine.settings, context=context)
    app = create_app(config, engine, served, {**backend.as_dict(), "dtype": dtype}, embeddings=embeddings,
                     speech=speech)
    if speech.model_ids:
        log.info("also serving %s", ", ".join(speech.model_ids))
    log.info("serving %s (%s) on http://%s:%d", served.model_id, resolved.source, config.host, config.port)
    try:
        waitress_serve(app, host=config.host, port=config.port, threads=config.waitress_threads,
                       channel_request_lookahead=1, ident="mlx-proof")
    finally:
        engine.stop()
        if embeddings is not None:
            embeddings.stop()
        speech.stop()
