"""--decode-step auto: which step runs where, what it brings with it (context, prefix cache,
lookup steps), and the batch step taking over a model the compiled step cannot lay out."""

from __future__ import annotations

import pytest

from serving.app import engine_settings
from serving.backend import decode_step_for
from serving.config import build_config
from serving.engine.fixed_shape import FixedShapeUnsupported
from serving.engine.loop import Engine, EngineSettings

from .fakes import FakeGenerator, FakeTokenizer


@pytest.mark.parametrize("policy, backend, serial, step", [
    ("auto", "cuda", False, "compiled"), ("auto", "cpu", False, "batch"), ("auto", "metal", False, "batch"),
    ("auto", "cuda", True, "batch"), ("batch", "cuda", False, "batch"), ("compiled", "cpu", False, "compiled"),
])
def test_auto_compiles_the_step_on_cuda_only(policy, backend, serial, step):
    assert decode_step_for(policy, backend, one_at_a_time=serial) == step


def test_the_default_on_cuda_is_the_compiled_step_over_the_models_context_with_the_prefix_cache():
    config = build_config({})
    assert config.decode_step == "auto" and config.prefix_cache_bytes > 0
    cuda = engine_settings(config, "cuda", model_context=32768)
    assert cuda.compiled_step_context == 32768 and cuda.decode_step_auto
    assert cuda.prefix_cache_bytes == config.prefix_cache_bytes and cuda.lookup_draft == 4
    cpu = engine_settings(config, "cpu", model_context=32768)
    assert cpu.compiled_step_context is None and cpu.lookup_draft == 4  # lookup in the batch step on a CPU
    assert engine_settings(build_config({"deterministic": True}), "cuda").compiled_step_context is None


def test_an_explicit_compiled_step_keeps_its_cap_and_the_prefix_cache():
    config = build_config({"decode_step": "compiled", "compiled_step_context": 256})
    settings = engine_settings(config, "cpu", model_context=8192)
    assert settings.compiled_step_context == 256 and not settings.decode_step_auto
    assert settings.prefix_cache_bytes == config.prefix_cache_bytes > 0
    with pytest.raises(ValueError, match="at least 16"):
        build_config({"compiled_step_context": 8})
    with pytest.raises(ValueError, match="auto, batch or compiled"):
        build_config({"decode_step": "eager"})


def refusing_factory(built: list):
    def factory(model, tokenizer, settings):
        built.append(settings)
        if settings.compiled_step_context is not None:
            raise FixedShapeUnsupported("this model's layers use RotatingKVCache")
        return FakeGenerator()
    return factory


def test_auto_falls_back_to_the_batch_step_for_a_model_the_compiled_step_cannot_serve():
    built = []
    engine = Engine(lambda: (None, FakeTokenizer()),
                    EngineSettings(compiled_step_context=4096, decode_step_auto=True, lookup_draft=4),
                    generator_factory=refusing_factory(built))
    engine.start(timeout_s=5)
    try:
        assert len(built) == 2 and engine.settings.compiled_step_context is None
        assert engine.settings.lookup_draft == 0  # on CUDA lookup steps pay only in the compiled step
        assert engine.stats()["mode"] == "continuous-batching"
    finally:
        engine.stop()


def test_an_asked_for_compiled_step_that_cannot_serve_the_model_fails_the_load():
    engine = Engine(lambda: (None, FakeTokenizer()), EngineSettings(compiled_step_context=4096),
                    generator_factory=refusing_factory([]))
    with pytest.raises(RuntimeError, match="RotatingKVCache"):
        engine.start(timeout_s=5)


class Weights:
    """Just enough of a model for the engine to read its weights' dtype."""

    def __init__(self, dtype):
        import mlx.core as mx
        self._p = {"w": mx.zeros((2, 2), dtype=dtype)}

    def parameters(self):
        return self._p


@pytest.mark.parametrize("dtype, compiled", [("float32", True), ("bfloat16", False), ("float16", False)])
def test_auto_compiles_only_over_float32_weights_where_greedy_tokens_stay_the_eager_steps(dtype, compiled):
    import mlx.core as mx

    built = []

    def factory(model, tokenizer, settings):
        built.append(settings.compiled_step_context)
        return FakeGenerator()

    engine = Engine(lambda: (Weights(getattr(mx, dtype)), FakeTokenizer()),
                    EngineSettings(compiled_step_context=4096, decode_step_auto=True, lookup_draft=4),
                    generator_factory=factory)
    engine.start(timeout_s=5)
    try:
        assert built == [4096 if compiled else None]
        assert engine.settings.lookup_draft == (4 if compiled else 0)
    finally:
        engine.stop()
    # Asked for by name, the compiled step runs over any weights.
    asked = Engine(lambda: (Weights(mx.bfloat16), FakeTokenizer()), EngineSettings(compiled_step_context=4096),
                   generator_factory=lambda m, t, s: FakeGenerator() if s.compiled_step_context else None)
    asked.start(timeout_s=5)
    assert asked.settings.compiled_step_context == 4096
    asked.stop()


def test_cuda_converts_catalog_models_to_float32_like_the_cpu():
    from serving.backend import default_dtype

    assert default_dtype("cuda") == default_dtype("cpu") == "float32" and default_dtype("metal") == "bfloat16"
