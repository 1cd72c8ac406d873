"""Prompt-lookup speculative decoding for a greedy sequence that decodes alone.

A decode step of one row on a CPU is mostly reading the weights; the BLAS shim's few-row kernel
reads them once for 1 + 4 rows too, so a forward that checks four drafted tokens costs about a
third more than a plain step (on SmolLM2-135M here: 99 ms against 73, medians in one process;
it is also a synchronous step, where BatchGenerator overlaps the next step with this one).
When exactly one sequence is decoding, greedily and without logits processors, the step drafts
up to `draft_tokens` tokens by finding the latest earlier occurrence of the tail n-gram in the
prompt and the answer so far (no draft model), runs them through the model in one forward, and
keeps the prefix that greedy decoding itself picks, plus the token the forward makes after it.
Greedy acceptance is exact: the tokens are the ones one-at-a-time decoding would give, as long
as the verifying forward's arithmetic matches (checked token for token: README, "Prompt-lookup
decoding").

This is a step of our own over mlx-lm's batch state, not a patch of the library: the
generator below reads BatchGenerator's generation batch and, when the step cannot be taken
(several sequences, a prompt still prefilling, sampling, a processor, no draft), leaves it
all to BatchGenerator.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_NGRAM = 3
# A lone token recurs everywhere ("\n", "the"), so a 1-gram match drafts mostly wrong tokens, and a
# verifying forward with a rejected draft costs more than a plain step: on the seed poems the
# replay put 1-gram drafting at 1.00x for 32-token answers, 2-grams at 1.09x (README).
MIN_NGRAM = 2


class NgramIndex:
    """draft() for a growing history without rescanning it: for every 2- and 3-gram, where its
    latest occurrence ends. An agent's prompt is thousands of tokens, and a scan per step would
    cost milliseconds of Python; this costs a few dictionary updates per token."""

    def __init__(self) -> None:
        self.history: list[int] = []
        self._ends: dict[tuple[int, ...], int] = {}

    def sync(self, tokens: list[int]) -> None:
        """Take in what `tokens` (which only ever grows) holds beyond what was seen."""
        for token in tokens[len(self.history):]:
            self.history.append(token)
            end = len(self.history)
            for n in range(MIN_NGRAM, MAX_NGRAM + 1):
                if end >= n:
                    self._ends[tuple(self.history[end - n:end])] = end

    def draft(self, pending: int, size: int) -> list[int]:
        """Up to `size` tokens that followed the latest earlier occurrence of the longest tail
        n-gram (MAX_NGRAM down to MIN_NGRAM tokens) of the history with `pending` appended."""
        for n in range(MAX_NGRAM, MIN_NGRAM - 1, -1):
            if len(self.history) + 1 < n:
                continue
            end = self._ends.get((*self.history[len(self.history) - n + 1:], pending))
            if end is not None:
                return (self.history[end:] + [pending])[:size]
        return []


class LoneSequenceDrafter:
    """The n-gram index of the one sequence taking lookup steps, begun afresh when another
    sequence takes its place (a lookup step serves a lone sequence, so one index is enough)."""

    def __init__(self) -> None:
        self._uid: int | None = None
        self._index = NgramIndex()

    def draft(self, uid: int, seen: list[int], pending: int, size: int) -> list[int]:
        """NgramIndex.draft for sequence `uid`, whose tokens so far are `seen` then `pending`."""
        if uid != self._uid:
            self._uid, self._index = uid, NgramIndex()
        self._index.sync(seen)
        return self._index.draft(pending, size)


def draft(history: list[int], size: int) -> list[int]:
    """NgramIndex.draft for a whole history at once (its last token is the pending one)."""
    if not history:
        return []
    index = NgramIndex()
    index.sync(history[:-1])
    return index.draft(history[-1], size)


def accepted_prefix(proposal: list[int], greedy: list[int]) -> int:
    """How many drafted tokens greedy decoding agrees with; greedy[i] follows proposal[:i]."""
    n = 0
    while n < len(proposal) and proposal[n] == greedy[n]:
        n += 1
    return n


@dataclass
class LookupStats:
    steps: int = 0        # verifying forwards taken
    drafted: int = 0      # tokens drafted into them
    accepted: int = 0     # drafted tokens greedy decoding kept

    def record(self, drafted: int, accepted: int) -> None:
        """One verifying forward, with `drafted` tokens of which greedy decoding kept `accepted`."""
        self.steps += 1
        self.drafted += drafted
        self.accepted += accepted

    def as_dict(self) -> dict:
        return {"steps": self.steps, "drafted": self.drafted, "accepted": self.accepted,
                "acceptance": round(self.accepted / self.drafted, 4) if self.drafted else None}


def make_lookup_generator(model, *, draft_tokens: int, **batch_generator_kwargs):
    """A BatchGenerator that takes lookup steps for a lone greedy sequence (mlx-lm is imported
    here, on the engine thread, as the plain generator's factory does)."""
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.models.cache import BatchKVCache

    class LookupBatchGenerator(BatchGenerator):
        def __init__(self) -> None:
            super().__init__(model, **batch_generator_kwargs)
            self.draft_tokens = draft_tokens
            self.lookup = LookupStats()
            self._drafter = LoneSequenceDrafter()

        def next(self):
            with mx.stream(self._stream):
                responses = self._lookup_step()
                return ([], responses) if responses is not None else self._next()

        def _lone_greedy(self):
            """The generation batch when one greedy sequence, and nothing else, is in flight."""
            gen = self._generation_batch
            if len(gen) != 1 or len(self._prompt_batch) or self._unprocessed_sequences:
                return None
            if not getattr(gen.samplers[0], "greedy", False) or gen.logits_processors[0]:
                return None
            if not all(isinstance(c, BatchKVCache) for c in gen.prompt_cache):
                return None  # only a plain KV cache can be trimmed back past rejected drafts
            return gen

        def _lookup_step(self):
            gen = self._lone_greedy()
            if gen is None:
                return None
            room = gen.max_tokens[0] - gen._num_tokens[0]  # tokens this sequence may still emit
            if room < 2:
                return None
            # The pending token: sampled by the last step, returned now, not yet in the cache.
            pending, pending_logprobs = gen._next_tokens, gen._next_logprobs[0]
            mx.eval(pending)
            token = int(pending[0].item())
            proposal = self._drafter.draft(gen.uids[0], gen.tokens[0], token, min(self.draft_tokens, room - 1))
            if not proposal:
                return None
            logits = self.model(mx.array([[token, *proposal]], dtype=mx.uint32), cache=gen.prompt_cache)[0]
            # The lean batch step's rule (engine.lean_step): the argmax of the logits themselves, the
            # log-probabilities left lazy for a request that asks for them.
            logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            greedy = mx.argmax(logits, axis=-1)
            mx.eval(greedy)
            greedy = greedy.tolist()
            kept = accepted_prefix(proposal, greedy)
            self.lookup.record(len(proposal), kept)
            emitted = [(token, pending_logprobs)] + [(proposal[i], logprobs[i]) for i in range(kept)]
            return self._emit(gen, emitted, 1 + len(proposal), greedy[kept], logprobs[kept])

        def _emit(self, gen, emitted, fed: int, following: int, following_logprobs):
            """Responses for the emitted tokens, up to a finish; the cache is cut back to them."""
            responses, finish = [], None
            for tok, lps in emitted:
                gen._num_tokens[0] += 1
                if gen._num_tokens[0] >= gen.max_tokens[0]:
                    finish = "length"
                if gen._matchers[0].advance(tok):
                    finish = "stop"
                responses.append((tok, lps, finish))
                if finish is not None:
                    break
            for c in gen.prompt_cache:
                c.trim(fed - len(responses))
            gen.tokens[0].extend(tok for tok, _, _ in responses)
            self._counters.generation_tokens += len(responses)
            self._counters.generation_steps += 1
            uid = gen.uids[0]
            result = [gen.Response(uid=uid, token=tok, logprobs=lps, finish_reason=None,
                                   prompt_cache=None, all_tokens=None) for tok, lps, _ in responses[:-1]]
            tok, lps, _ = responses[-1]
            if finish is not None:
                result.append(gen.Response(uid=uid, token=tok, logprobs=lps, finish_reason=finish,
                                           prompt_cache=gen.extract_cache(0), all_tokens=gen.tokens[0]))
                gen.filter([])
                return result
            result.append(gen.Response(uid=uid, token=tok, logprobs=lps, finish_reason=None,
                                       prompt_cache=None, all_tokens=None))
            gen._current_tokens = mx.array([tok], dtype=mx.uint32)
            gen._current_logprobs = [lps]
            gen._next_tokens = mx.array([following], dtype=mx.uint32)
            gen._next_logprobs = [following_logprobs]
            return result

    return LookupBatchGenerator()
