"""Small fakes for unit tests of the API layer and the engine loop (never used for evidence)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.api.dialect import ServedModel
from serving.engine.request import Finished, RequestHandle, StepOutput, TokenLogprob, Usage


class FakeDetokenizer:
    """mlx-lm's streaming detokenizer contract, one character per token."""

    def __init__(self) -> None:
        self.text = ""

    def add_token(self, token: int) -> None:
        self.text += chr(token)

    def finalize(self) -> None:
        pass


class FakeTokenizer:
    """One token per character; the chat template joins role-tagged lines."""

    eos_token_ids = {0}

    @property
    def detokenizer(self):
        return FakeDetokenizer()

    def get_vocab(self):
        return {chr(i): i for i in range(256)}

    def encode(self, text, add_special_tokens=True):
        return [ord(c) % 256 for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False, **kwargs):
        if messages[-1]["role"] == "assistant" and messages[-1]["content"] == "boom":
            raise ValueError("template says no")
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


class FakeEngine:
    """Answers every request with a fixed list of text pieces, one token each."""

    def __init__(self, pieces=("Hello", ", ", "world"), *, fail: bool = False, cached: int = 0) -> None:
        self.tokenizer = FakeTokenizer()
        self.pieces = pieces
        self.fail = fail
        self.cached = cached
        self.requests = []

    def submit(self, request):
        self.requests.append(request)
        handle = RequestHandle(request, lambda h: None)
        n = min(len(self.pieces), request.max_tokens)
        for i, piece in enumerate(self.pieces[:n]):
            token = 100 + i
            lps = None
            if request.logprobs is not None:
                top = tuple((100 + j, -0.1 * (j + 1)) for j in range(request.logprobs))
                lps = (TokenLogprob(token, -0.1, top),)
            handle.put(StepOutput((token,), piece, lps))
        usage = Usage(len(request.prompt_tokens), n, self.cached)
        if self.fail:
            handle.put(Finished("error", usage, error="boom"))
        else:
            handle.put(Finished("length" if n == request.max_tokens else "eos", usage))
        return handle

    def stats(self):
        return {"mode": "fake", "alive": True, "queue_depth": 0}


def served(context_length: int = 64) -> ServedModel:
    return ServedModel(model_id="fake-model", aliases=("alias",), context_length=context_length,
                       vocab_size=256, weights_sha256="0" * 64, source="test")


# ---- a fake batch generator, for the engine loop's unit tests ---------------

@dataclass
class FakeResponse:
    uid: int
    token: int
    logprobs: Any
    finish_reason: str | None
    prompt_cache: Any = None
    all_tokens: Any = None


class FakeGenerator:
    """mlx-lm BatchGenerator's contract: each sequence answers `script` (a list of
    token ids, then the finish reason "stop" for EOS) one token per step.

    `batches` records, per step, the uids decoded in it. With `batch_shift`, a sequence
    that shares a step with another gets its token shifted by that much: planted batch
    divergence, as a GPU's batch-shaped kernels can cause."""

    def __init__(self, script=(72, 105, 0), *, fail_on_step: int | None = None, die_on_step: int | None = None,
                 never_finish: bool = False, step_s: float = 0.0, batch_shift: int = 0) -> None:
        self.batch_shift = batch_shift
        self.batches: list[tuple[int, ...]] = []
        self.step_s = step_s
        self.script = list(script)
        self.fail_on_step = fail_on_step
        self.die_on_step = die_on_step
        self.never_finish = never_finish
        self.steps = 0
        self.seqs: dict[int, dict] = {}
        self.inserted: list[dict] = []
        self.removed: list[int] = []
        self._uid = 0

    def insert(self, prompts, max_tokens=None, caches=None, all_tokens=None, samplers=None,
               logits_processors=None):
        uids = []
        for i, prompt in enumerate(prompts):
            if not prompt:
                raise ValueError("empty prompt")
            uid, self._uid = self._uid, self._uid + 1
            self.seqs[uid] = {"prompt": list(prompt), "max": max_tokens[i], "n": 0,
                              "all": list(all_tokens[i]) + list(prompt) if all_tokens else list(prompt)}
            self.inserted.append({"uid": uid, "prompt": list(prompt), "cache": caches[i] if caches else None,
                                  "all_tokens": list(all_tokens[i]) if all_tokens else []})
            uids.append(uid)
        return uids

    def remove(self, uids, return_prompt_caches=False):
        out = {}
        for uid in uids:
            seq = self.seqs.pop(uid, None)
            self.removed.append(uid)
            if seq is not None and return_prompt_caches:
                out[uid] = ([FakeCacheLayer(len(seq["all"]))], seq["all"])
        return out

    def next(self):
        time.sleep(self.step_s)
        self.steps += 1
        if self.die_on_step == self.steps:
            raise KillEngine("planted death")
        if self.fail_on_step == self.steps:
            raise RuntimeError("planted step failure")
        responses = []
        if self.seqs:
            self.batches.append(tuple(self.seqs))
        for uid, seq in list(self.seqs.items()):
            token = 7 if self.never_finish else self.script[min(seq["n"], len(self.script) - 1)]
            if self.batch_shift and len(self.seqs) > 1 and token != 0:
                token += self.batch_shift
            seq["n"] += 1
            seq["all"].append(token)
            reason = None
            if not self.never_finish and token == 0:
                reason = "stop"
            elif seq["n"] >= seq["max"]:
                reason = "length"
            lp = np.log(np.full(256, 1 / 256, dtype=np.float32))
            lp[token] = np.log(0.5)
            cache = [FakeCacheLayer(len(seq["all"]))] if reason else None
            responses.append(FakeResponse(uid, token, lp, reason, cache, list(seq["all"]) if reason else None))
            if reason:
                del self.seqs[uid]
        return [], responses


class KillEngine(BaseException):
    """Escapes the loop's `except Exception`, as a real fatal error would."""


class FakeCacheLayer:
    def __init__(self, n: int) -> None:
        self.n = n
        self.nbytes = 10 * n

    def is_trimmable(self):
        return True

    def trim(self, k):
        self.n -= k
        return k


class FakeConstraints:
    """The grammar builder's contract; records what it was asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple] = []

    def tool_call_constraint(self, tools, *, allow_parallel):
        self.asked.append(("tools", [t["name"] for t in tools], allow_parallel))
        return lambda: (lambda tokens, logits: logits)

    def json_schema_constraint(self, schema):
        self.asked.append(("json", schema))
        return lambda: (lambda tokens, logits: logits)
