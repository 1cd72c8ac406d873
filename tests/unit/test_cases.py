"""Throughput cases are data: the prefix-cache workloads load as conversations and shared
system prompts, every request is distinct, and single-turn cases keep their old bodies."""

from __future__ import annotations

import pytest

from suites.throughput.cases import CASES_FILE, load_cases

AGENT_SYSTEM = (CASES_FILE.parent / "prompts" / "agent_system.txt").read_text().strip()


def _case(name: str):
    (case,) = load_cases([name])
    return case


def _texts(body: dict) -> list[str]:
    return [m["content"] for m in body["messages"]]


def test_tags_select_the_cache_cases_and_their_ci_variants():
    assert [c.name for c in load_cases(["prefix-cache"])] == ["multiturn", "agent"]
    assert [c.name for c in load_cases(["ci-cache"])] == ["multiturn-ci", "agent-ci"]


def test_multiturn_is_conversations_with_followups():
    case = _case("multiturn")
    assert (case.requests, case.turns, case.concurrency, case.max_tokens) == (4, 4, 2, 32)
    assert case.system is None and len(case.followups) == 3
    convs = case.conversations(model="m", repeat=0)
    assert len(convs) == 4 and all(c.turns == 4 and c.followups == case.followups for c in convs)
    assert all(c.body["temperature"] == 0.0 and c.body["model"] == "m" for c in convs)
    assert all([m["role"] for m in c.body["messages"]] == ["user"] for c in convs)
    with pytest.raises(ValueError, match="multi-turn"):
        case.bodies(model="m", repeat=0)
    described = case.describe()
    assert (described["conversations"], described["turns"]) == (4, 4)
    assert described["followups"] == list(case.followups)


def test_agent_shares_the_long_system_prompt_and_varies_the_user_turn():
    case = _case("agent")
    assert (case.requests, case.turns, case.max_tokens) == (4, 1, 16)
    bodies = case.bodies(model=None, repeat=0)
    assert all(_texts(b)[0] == AGENT_SYSTEM and b["messages"][0]["role"] == "system" for b in bodies)
    assert all("model" not in b for b in bodies)
    assert len({_texts(b)[1] for b in bodies}) == 4
    # SmolLM2's tokenizer gives ~4 chars/token on English: about 3k tokens.
    assert 2_500 <= len(AGENT_SYSTEM) / 4 <= 3_600
    assert case.describe()["system"] == AGENT_SYSTEM
    assert [c.body for c in case.conversations(model=None, repeat=0)] == bodies  # one turn each


def test_ci_variants_are_small_but_keep_the_same_system_prompt():
    agent_ci, multi_ci = _case("agent-ci"), _case("multiturn-ci")
    assert agent_ci.system == AGENT_SYSTEM and (agent_ci.requests, agent_ci.max_tokens) == (2, 4)
    assert (multi_ci.requests, multi_ci.turns, multi_ci.max_tokens) == (1, 2, 8)
    assert multi_ci.followups == _case("multiturn").followups[:1]


@pytest.mark.parametrize("name", ["multiturn", "agent"])
def test_every_request_is_unique_across_requests_repeats_and_warmup(name):
    case = _case(name)
    first_user = [_texts(c.body)[-1] for repeat in (-1, 0, 1, 2)
                  for c in case.conversations(model=None, repeat=repeat)]
    assert len(set(first_user)) == len(first_user) == 4 * case.requests
    assert not any("{uid}" in t for t in first_user)


def test_single_turn_cases_send_what_they_always_sent():
    bodies = _case("seed-c1").bodies(model="m", repeat=3)
    assert bodies[0] == {"messages": [{"role": "user", "content": "Write a short poem about nature"}],
                         "max_tokens": 64, "temperature": 0.0, "model": "m"}
    assert "system" not in _case("seed-c1").describe() and "turns" not in _case("seed-c1").describe()


def _write(tmp_path, case: str, prompt_set: str) -> list:
    path = tmp_path / "cases.toml"
    path.write_text(case + "\n" + prompt_set)
    return load_cases(path=path)


def test_conversation_shape_errors(tmp_path):
    chats = '[prompt_set.p]\ntemplate = "{item}"\nitems = ["a"]\nfollowups = ["b"]\n'
    with pytest.raises(ValueError, match="3 turns but prompt set 'p' has 1 followups"):
        _write(tmp_path, '[[case]]\nname = "x"\nprompts = "p"\nconversations = 1\nturns = 3\nmax_tokens = 1', chats)
    with pytest.raises(ValueError, match="needs 'conversations'"):
        _write(tmp_path, '[[case]]\nname = "x"\nprompts = "p"\nrequests = 1\nturns = 2\nmax_tokens = 1', chats)
    with pytest.raises(ValueError, match="needs 'requests'"):
        _write(tmp_path, '[[case]]\nname = "x"\nprompts = "p"\nconversations = 1\nmax_tokens = 1', chats)
    (tmp_path / "s.txt").write_text("be brief\n")
    both = '[prompt_set.p]\ntemplate = "{item}"\nitems = ["a"]\nsystem = "x"\nsystem_file = "s.txt"\n'
    with pytest.raises(ValueError, match="not both"):
        _write(tmp_path, '[[case]]\nname = "x"\nprompts = "p"\nrequests = 1\nmax_tokens = 1', both)
    inline = '[prompt_set.p]\ntemplate = "{item}"\nitems = ["a"]\nsystem_file = "s.txt"\n'
    (case,) = _write(tmp_path, '[[case]]\nname = "x"\nprompts = "p"\nrequests = 1\nmax_tokens = 1', inline)
    assert case.bodies(model=None, repeat=0)[0]["messages"][0] == {"role": "system", "content": "be brief"}


def test_a_case_can_add_request_fields():
    free, constrained = _case("json-free"), _case("json-schema")
    assert free.prompts == constrained.prompts
    body = constrained.bodies(model=None, repeat=0)[0]
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["name", "age", "job"]
    assert "response_format" not in free.bodies(model=None, repeat=0)[0]
    assert constrained.describe()["body"] == {"response_format": body["response_format"]}


@pytest.mark.parametrize("asked, want", [(1, 8), (0, 8), (12, 12)])
def test_warm_up_is_at_least_one_wave_at_the_cases_concurrency(monkeypatch, asked, want):
    """A server that builds something per batch shape must meet the case's shapes before the
    first measured repeat: c=8 warms up with 8 conversations however few are asked for."""
    from types import SimpleNamespace

    from suites.throughput import runner

    case = next(c for c in load_cases() if c.concurrency == 8 and c.endpoint == "chat")
    sent = []
    monkeypatch.setattr(runner, "run_conversations", lambda url, convs, arrival, endpoint: sent.append(len(convs)))
    target = SimpleNamespace(model_field="m", server=SimpleNamespace(base_url="http://127.0.0.1:9"))
    runner.warm_up(target, case, asked)
    assert sent == [want]
