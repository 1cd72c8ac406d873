"""OpenAI legacy completions: the request adapter and the stream encoder."""

from __future__ import annotations

from ...engine.request import Finished, StepOutput
from ..dialect import Frame, Prepared, ServeContext
from ..errors import InvalidRequest, UnsupportedField
from ..options import check_model, generation_request, resolve_max_tokens
from ..prompting import text_tokens
from ..request_body import validate
from . import common
from .schemas import CompletionRequest


def prompt_tokens(body: CompletionRequest, ctx: ServeContext) -> tuple[list[int], str]:
    """Token ids, and the prompt text (for echo)."""
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        if any(not 0 <= t < ctx.served.vocab_size for t in prompt):
            raise InvalidRequest("prompt contains token ids outside the vocabulary", param="prompt")
        return list(prompt), ctx.tokenizer.decode(prompt)
    text = prompt[0] if isinstance(prompt, list) else prompt
    return text_tokens(text, ctx.tokenizer), text


def adapt(raw: dict, ctx: ServeContext) -> Prepared:
    body = validate(raw, CompletionRequest)
    if body.echo and body.logprobs is not None:
        raise UnsupportedField("logprobs together with echo (prompt logprobs) is not supported", param="logprobs")
    check_model(body.model, ctx.served, ctx.config)
    tokens, text = prompt_tokens(body, ctx)
    request = generation_request(
        tokens,
        max_tokens=resolve_max_tokens(body.max_tokens, prompt_len=len(tokens), served=ctx.served,
                                      config=ctx.config, prompt_param="prompt"),
        sampling=common.sampling(body, ctx),
        config=ctx.config,
        stop=body.stop_list,
        logprobs=body.logprobs,
        prompt_param="prompt",
    )
    encoder = CompletionEncoder(ctx, prompt_tokens=tokens, echo=text if body.echo else "",
                                include_usage=body.include_usage, logprobs=body.logprobs is not None,
                                return_token_ids=body.return_token_ids)
    return Prepared(request, encoder, body.stream)


class CompletionEncoder(common.BaseEncoder):
    def __init__(self, ctx: ServeContext, *, echo: str, **options) -> None:
        super().__init__(ctx, common.Envelope(model_id=ctx.served.model_id, id_prefix="cmpl",
                                              object_whole="text_completion", object_chunk="text_completion"),
                         **options)
        self.echo = echo
        self._offset = len(echo)

    def _logprobs(self, outputs: list[StepOutput]) -> dict | None:
        """The legacy shape: parallel lists, top_logprobs as {token text: logprob}."""
        if not self.logprobs:
            return None
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for lp in common.logprob_entries(outputs):
            text = self.ctx.token_text(lp.token)
            out["tokens"].append(text)
            out["token_logprobs"].append(lp.logprob)
            out["top_logprobs"].append({self.ctx.token_text(t): v for t, v in lp.top} if lp.top else None)
            out["text_offset"].append(self._offset)
            self._offset += len(text)
        return out

    def _choice(self, text: str, outputs: list[StepOutput], finish: str | None) -> dict:
        return {"index": 0, "text": text, "logprobs": self._logprobs(outputs), "finish_reason": finish,
                **self._ids(token_ids=common.token_ids(outputs))}

    def head(self) -> list[Frame]:
        if not (self.echo or self.return_token_ids):
            return []
        choice = {"index": 0, "text": self.echo, "logprobs": None, "finish_reason": None,
                  **self._ids(prompt_token_ids=self.prompt_tokens)}
        return [self.env.chunk([choice])]

    def step(self, out: StepOutput) -> list[Frame]:
        if not self._worth_a_chunk(out):
            return []
        return [self.env.chunk([self._choice(out.text, [out], None)])]

    def _finish_choice(self, reason: str) -> dict:
        return {"index": 0, "text": "", "logprobs": None, "finish_reason": reason}

    def whole(self, outputs: list[StepOutput], fin: Finished) -> dict:
        choice = self._choice(self.echo + "".join(o.text for o in outputs), outputs, common.finish_reason(fin))
        if self.return_token_ids:
            choice["prompt_token_ids"] = self.prompt_tokens
        return self.env.whole(choices=[choice], usage=common.usage(fin.usage))
