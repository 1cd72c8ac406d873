"""The shipped profiles, and what the serve command says about them."""

import json
from pathlib import Path

import pytest
from serving.config import build_config, load_profiles
from serving.profile_status import (launch_hint, list_profiles, profiles_document, publication_notice,
                                    with_profile_auth)

SERVING = {"text-default", "text-deterministic", "text-batch-invariant", "text-tools", "text-json"}
CLIENTS = {"open-webui", "claude-code", "codex", "opencode", "generic-openai"}


def test_the_issue_profiles_are_shipped_and_clients_name_serving_profiles():
    profiles = load_profiles()
    assert {n for n, p in profiles.items() if p.get("kind", "serving") == "serving"} == SERVING
    assert {n for n, p in profiles.items() if p.get("kind") == "client"} == CLIENTS
    for name in CLIENTS:
        assert profiles[name]["serving"] in SERVING and profiles[name]["auth"] == "api-key"


def test_client_flags_lie_over_their_serving_profiles():
    claude = build_config({"profile": "claude-code"})
    tools = build_config({"profile": "text-tools"})
    assert (claude.tool_call_parser, claude.max_concurrency) == (tools.tool_call_parser, tools.max_concurrency)
    assert (claude.max_tokens_ceiling, claude.over_ceiling) == (4096, "clamp")
    # the command line still wins over the profile
    assert build_config({"profile": "claude-code", "max_tokens_ceiling": 1024}).max_tokens_ceiling == 1024


def test_deterministic_on_the_command_line_overrides_a_profiles_cache():
    assert build_config({"profile": "text-default", "deterministic": True}).prefix_cache_bytes == 0
    with pytest.raises(ValueError, match="prefix cache off"):
        build_config({"profile": "text-default", "deterministic": True, "prefix_cache_bytes": 1})


def test_the_document_the_harness_matches_evidence_to():
    doc = profiles_document()
    det = doc["profiles"]["text-deterministic"]
    assert det["explicit"]["deterministic"] is True and det["resolved"]["prefix_cache_bytes"] == 0
    assert doc["profiles"]["codex"]["explicit"]["tool_prompt"] == "auto"  # text-tools' flag, inherited
    assert "port" in doc["instance_flags"] and doc["defaults"]["max_concurrency"] == 32
    json.dumps(doc)


def write_matrix(tmp_path: Path, *cells) -> Path:
    path = tmp_path / "published.json"
    path.write_text(json.dumps({"as_of": "2026-11-26T00:00:00+00:00", "cells": list(cells)}))
    return path


def cell(profile, model, decision, reasons=()):
    return {"profile": profile, "model": model, "decision": decision, "published": decision != "hold",
            "reasons": list(reasons), "gates": []}


def test_a_held_profile_warns_with_its_failed_evidence(tmp_path):
    path = write_matrix(tmp_path, cell("text-json", "qwen2.5-coder-0.5b", "hold",
                                       ['`tools.errors == 0`: fail: 3 (3 requests errored; run R)']))
    config = build_config({"profile": "text-json", "model": "qwen2.5-coder-0.5b"})
    level, message = publication_notice(config, published_path=path)
    assert level == "warning" and "HELD" in message and "tools.errors == 0" in message and "run R" in message


def test_an_untargeted_pair_warns_and_a_clean_publish_is_quiet(tmp_path):
    path = write_matrix(tmp_path, cell("text-default", "smollm2-135m", "promote"),
                        cell("text-tools", "qwen2.5-coder-0.5b", "promote-with-warning", ["warning: x"]))
    assert publication_notice(build_config({"profile": "text-default"}), published_path=path) is None
    level, message = publication_notice(build_config({"profile": "text-tools"}), published_path=path)
    assert level == "warning" and "no evidence decision" in message and "nox -s validate" in message
    level, message = publication_notice(build_config({"profile": "text-tools", "model": "qwen2.5-coder-0.5b"}),
                                        published_path=path)
    assert level == "note" and "warning: x" in message
    assert publication_notice(build_config({}), published_path=tmp_path / "none.json")[0] == "warning"


def test_list_profiles_shows_each_models_status(tmp_path):
    path = write_matrix(tmp_path, cell("text-default", "smollm2-135m", "promote"),
                        cell("codex", "smollm2-135m", "hold", ["`contracts.codex.tools == \"pass\"`: fail"]))
    lines = []
    assert list_profiles(published_path=path, out=lines.append) == 0
    text = "\n".join(lines)
    assert "smollm2-135m: published (promote)" in text and "smollm2-135m: held (hold)" in text
    assert "codex [client -> text-tools]" in text


def test_client_profiles_get_a_key_and_a_launch_hint():
    config, made = with_profile_auth(build_config({"profile": "claude-code", "port": 9001}))
    assert made and config.api_key.startswith("sk-local-")
    hint = "\n".join(launch_hint(config))
    assert "ANTHROPIC_BASE_URL=http://127.0.0.1:9001" in hint and f"ANTHROPIC_AUTH_TOKEN={config.api_key}" in hint
    assert "CLAUDE_CODE_MAX_OUTPUT_TOKENS=4096" in hint and "claude --model smollm2-135m" in hint
    kept, made = with_profile_auth(build_config({"profile": "opencode", "api_key": "k"}))
    assert not made and kept.api_key == "k"
    assert "{env:MLX_PROOF_KEY}" in "\n".join(launch_hint(kept))  # the client's own placeholder survives
    assert launch_hint(build_config({"profile": "text-default"})) == []
    assert with_profile_auth(build_config({"profile": "text-default"}))[1] is False
