"""Checks shared by the tests that load converted models directly."""


def greedy_chat(model, tokenizer, question: str, *, max_tokens: int) -> str:
    import mlx_lm

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
    )
    return mlx_lm.generate(model, tokenizer, prompt, max_tokens=max_tokens)
