"""The fixed-shape generator behind --batch-invariant, on a tiny random llama built in-process.

A sequence decoded alone and the same sequence decoded among others must give the same
tokens and bit-identical log-probabilities; and with nothing to change them, its tokens are
mlx-lm's own greedy tokens.
"""

from __future__ import annotations

import copy

import mlx.core as mx
import pytest
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import RotatingKVCache
from mlx_lm.sample_utils import make_logits_processors

from serving.engine.bucketed_step import BucketedGenerator
from serving.engine.fixed_shape import FixedShapeGenerator, FixedShapeUnsupported
from serving.engine.request import SamplingParams
from serving.engine.sampling import build_sampler

from .tiny_llama import tiny_llama

PROMPTS = [[5, 9, 13], [7] * 21, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [42]]


@pytest.fixture(scope="module")
def model():
    return tiny_llama(seed=3)


def generator(model, *, stop=(), rows=4, capacity=64):
    return FixedShapeGenerator(model, stop_tokens=set(stop), rows=rows, capacity=capacity, prefill_step_size=4,
                               prefill_per_step=2)


def drain(gen, uids, steps=200):
    out = {u: ([], [], None) for u in uids}
    for _ in range(steps):
        _, responses = gen.next()
        for r in responses:
            tokens, lps, _ = out[r.uid]
            tokens.append(r.token)
            lps.append(r.logprobs[r.token].item())
            out[r.uid] = (tokens, lps, r.finish_reason)
    return [out[u] for u in uids]


def decode(gen, prompts, max_tokens=12, **kw):
    return drain(gen, gen.insert(prompts, max_tokens=[max_tokens] * len(prompts), **kw))


def test_alone_and_batched_give_identical_tokens_and_logprobs(model):
    gen = generator(model)
    alone = [decode(gen, [p])[0] for p in PROMPTS]
    batched = decode(gen, PROMPTS)
    assert batched == alone  # tokens, log-probabilities to the last bit, finish reasons


def test_with_processors_too(model):
    gen = generator(model)
    procs = lambda: [make_logits_processors(repetition_penalty=1.5, repetition_context_size=32)]  # noqa: E731
    alone = [decode(gen, [p], logits_processors=procs())[0] for p in PROMPTS]
    batched = decode(gen, PROMPTS, logits_processors=[procs()[0] for _ in PROMPTS])
    assert batched == alone
    plain = [decode(gen, [p])[0] for p in PROMPTS]
    assert plain != alone  # the penalty did something, so the comparison above could fail


def test_tokens_are_mlx_lms_own_greedy_tokens(model):
    ours = [t for t, _, _ in decode(generator(model), PROMPTS, samplers=[build_sampler(SamplingParams())] * 4)]
    reference = BatchGenerator(model, stop_tokens=[], stream=mx.default_stream(mx.default_device()))
    theirs = [t for t, _, _ in drain(reference, reference.insert(PROMPTS, max_tokens=[12] * 4))]
    assert ours == theirs


def test_a_stop_token_ends_its_sequence_and_the_step_decoded_past_it_is_dropped(model):
    free = decode(generator(model), PROMPTS)
    stop = free[1][0][4]
    ended = decode(generator(model, stop=[stop]), PROMPTS)
    tokens, _, reason = ended[1]
    assert tokens == free[1][0][:tokens.index(stop) + 1] and reason == "stop"
    for (t_free, lp_free, _), (t, lp, r) in zip(free, ended):
        if stop not in t_free:
            assert (t, lp, r) == (t_free, lp_free, "length")


def test_more_sequences_than_rows_wait_for_a_free_slot(model):
    gen = generator(model, rows=2)
    alone = [decode(gen, [p], max_tokens=6)[0] for p in PROMPTS]
    assert decode(gen, PROMPTS, max_tokens=6) == alone


def test_removed_sequence_stops_and_others_go_on(model):
    gen = generator(model)
    alone = decode(gen, [PROMPTS[0]])[0]
    uids = gen.insert(PROMPTS[:2], max_tokens=[12, 12])
    gen.next()
    gen.next()
    gen.remove([uids[1]])
    rest = drain(gen, uids)
    assert rest[1][0] == []  # nothing after removal, though a step for it may have been in flight
    assert rest[0][2] == "length"


def test_capacity_limits_prompt_and_completion(model):
    gen = generator(model, capacity=16)
    with pytest.raises(ValueError, match="no room in the batch-invariant context of 16"):
        gen.insert([list(range(1, 17))])
    (tokens, _, reason), = decode(gen, [list(range(1, 11))], max_tokens=50)
    assert len(tokens) == 6 and reason == "length"


def test_models_with_other_caches_are_refused(model):
    class Windowed:
        layers = model.layers

        def make_cache(self):
            return [RotatingKVCache(max_size=8) for _ in self.layers]

        def parameters(self):
            return model.parameters()

    with pytest.raises(FixedShapeUnsupported, match="RotatingKVCache"):
        FixedShapeGenerator(Windowed(), stop_tokens=set(), rows=2, capacity=16, prefill_step_size=4,
                            prefill_per_step=1)


def bucketed(model, *, rows=8, capacity=64, min_capacity=8, stop=()):
    return BucketedGenerator(model, stop_tokens=set(stop), rows=rows, capacity=capacity, prefill_step_size=4,
                             prefill_per_step=2, min_capacity=min_capacity)


def test_bucketed_step_gives_mlx_lms_greedy_tokens_across_bucket_changes(model):
    """--decode-step compiled: rows grow 1 → 2 → 4 as sequences arrive and shrink as they
    finish, the KV buffer doubles 8 → 16 → 32; the tokens stay mlx-lm's own."""
    lengths = [3, 20, 11, 1]
    reference = BatchGenerator(model, stop_tokens=[], completion_batch_size=4, prefill_batch_size=4,
                               prefill_step_size=4)
    want = {u: [] for u in reference.insert(PROMPTS, max_tokens=lengths)}
    order = list(want)
    while any(len(want[u]) < n for u, n in zip(order, lengths)):
        for r in reference.next()[1]:
            want[r.uid].append(r.token)
    gen = bucketed(model)
    uids = gen.insert(PROMPTS, max_tokens=lengths)
    got = drain(gen, uids)
    assert [tokens for tokens, _, _ in got] == [want[u] for u in order]
    assert gen.capacity >= 8 and gen.rows <= 4


def steps(gen, n):
    for _ in range(n):
        gen.next()


def test_bucketed_rows_and_buffer_follow_the_load(model):
    gen = bucketed(model)
    assert (gen.rows, gen.capacity) == (1, 8)
    gen.insert([PROMPTS[1]], max_tokens=[16])  # 21 prompt tokens + 16: the buffer grows to 64
    gen.next()
    assert (gen.rows, gen.capacity) == (1, 32)
    steps(gen, 13)  # position 20 + 13 passes 32
    assert gen.capacity == 64
    steps(gen, 5)  # finished: the buffer falls back at the next step
    gen.insert(PROMPTS[:3], max_tokens=[2, 2, 2])
    steps(gen, 2)
    assert gen.rows == 4  # three more at once: doubled 1 → 2 → 4
    steps(gen, 10)
    assert (gen.rows, gen.capacity) == (1, 8)  # idle again: a quarter of the bucket, so it shrank


def test_bucketed_alone_equals_fixed_shape_alone(model):
    """With one sequence, bucketing changes only the shapes: tokens equal the fixed-shape step's."""
    for prompt in PROMPTS:
        fixed = decode(generator(model), [prompt])[0][0]
        assert decode(bucketed(model), [prompt])[0][0] == fixed


def test_fused_projections_give_the_models_own_logits(model):
    """The bucketed step's fused q|k|v and gate|up forward against the model's own forward, same
    shapes and caches: the same numbers (on this CPU, to the bit)."""
    fused, plain = bucketed(model), BucketedGenerator(model, stop_tokens=set(), rows=8, capacity=64,
                                                       prefill_step_size=4, prefill_per_step=2, min_capacity=8,
                                                       fused=False)
    assert fused._fused is not None and plain._fused is None
    got = [decode(g, PROMPTS, max_tokens=10) for g in (fused, plain)]
    assert got[0] == got[1]  # tokens and log-probabilities


def test_models_of_unknown_structure_decode_through_their_own_forward(model):
    from serving.engine.fused_decode import FusedDecoder

    class Renamed:
        args = type("Args", (), {"model_type": "mystery"})()

    renamed = Renamed()
    renamed.model = model.model
    assert FusedDecoder.build(renamed) is None


def test_bucketed_with_processors_removal_waiting_and_the_context(model):
    procs = lambda: [make_logits_processors(repetition_penalty=1.5, repetition_context_size=32)]  # noqa: E731
    alone = [decode(bucketed(model), [p], logits_processors=procs())[0] for p in PROMPTS]
    assert decode(bucketed(model), PROMPTS, logits_processors=[procs()[0] for _ in PROMPTS]) == alone

    two_rows = bucketed(model, rows=2)  # four sequences, at most two rows: the rest wait
    assert decode(two_rows, PROMPTS, max_tokens=6) == [decode(bucketed(model), [p], max_tokens=6)[0] for p in PROMPTS]

    gen = bucketed(model)
    uids = gen.insert(PROMPTS, max_tokens=[12] * 4)
    steps(gen, 3)
    gen.remove(uids[1:])  # three leave mid-flight: the rows shrink under the one left
    rest = drain(gen, uids)
    assert rest[0][2] == "length" and gen.rows == 1
    whole = decode(bucketed(model), [PROMPTS[0]])[0][0]
    assert rest[0][0] and whole[-len(rest[0][0]):] == rest[0][0]  # its tokens after the removal

    with pytest.raises(ValueError, match="no room in the model's context of 64"):
        bucketed(model).insert([list(range(1, 65))])


def finished(gen, uids, steps=200):
    """Each sequence's finishing response (its prompt cache and tokens ride on it)."""
    done = {}
    for _ in range(steps):
        for r in gen.next()[1]:
            if r.finish_reason is not None:
                done[r.uid] = r
        if len(done) == len(uids):
            break
    return [done[u] for u in uids]


def test_a_finished_sequence_hands_back_its_kv_and_a_cached_prefix_decodes_as_a_fresh_prefill(model):
    """The compiled step keeps the prefix cache: a finished sequence gives back one cache per
    layer holding every token fed (prompt + answer but the last pick), and a prompt that starts
    with those tokens prefills only its rest, with the tokens a fresh prefill gives."""
    gen = bucketed(model)
    gen.keep_prompt_caches = True
    (first,) = finished(gen, gen.insert([PROMPTS[2]], max_tokens=[6]))
    cache, tokens = first.prompt_cache, first.all_tokens
    assert len(tokens) == len(PROMPTS[2]) + 5 and tokens[:len(PROMPTS[2])] == PROMPTS[2]
    assert [c.offset for c in cache] == [len(tokens)] * len(cache)
    assert cache[0].keys.shape[2] == len(tokens)

    rest = [7, 3, 12]
    fresh = decode(bucketed(model), [tokens + rest])[0]
    reused = bucketed(model)
    got = drain(reused, reused.insert([rest], max_tokens=[12], caches=[cache], all_tokens=[tokens]))[0]
    assert got[0] == fresh[0] and got[2] == fresh[2]
    assert got[1] == pytest.approx(fresh[1], abs=1e-4)  # prefill chunks differ: close, not bitwise

    # A prompt cached whole: only its last token is left to feed, as the engine's lookup hands it.
    whole = bucketed(model)
    trimmed = copy.deepcopy(cache)
    for c in trimmed:
        c.trim(1)  # what the prefix cache does to a whole-prompt hit
    got = drain(whole, whole.insert([tokens[-1:]], max_tokens=[12], caches=[trimmed], all_tokens=[tokens[:-1]]))[0]
    assert got[0] == decode(bucketed(model), [tokens])[0][0]


def test_pipelined_and_removed_sequences_hand_back_only_the_positions_written(model):
    gen = bucketed(model)
    gen.keep_prompt_caches = True
    uids = gen.insert(PROMPTS[:2], max_tokens=[4, 30])
    a, = finished(gen, uids[:1])  # greedy rows pipeline: a step past the finish is in flight
    assert len(a.all_tokens) == len(PROMPTS[0]) + 3 and a.prompt_cache[0].offset == len(a.all_tokens)
    steps(gen, 2)
    cache, tokens = gen.remove(uids[1:], return_prompt_caches=True)[uids[1]]
    assert tokens[:len(PROMPTS[1])] == PROMPTS[1] and cache[-1].offset == len(tokens) > len(PROMPTS[1])

    off = bucketed(model)  # the engine asks for caches only when its prefix cache is on
    (r,) = finished(off, off.insert([PROMPTS[0]], max_tokens=[3]))
    assert r.prompt_cache is None and r.all_tokens is None


def test_the_batch_invariant_step_still_refuses_a_cached_prefix(model):
    with pytest.raises(ValueError, match="no cached prefix"):
        generator(model).insert([[1, 2]], caches=[[object()]], all_tokens=[[5]])
