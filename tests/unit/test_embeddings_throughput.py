"""The throughput suite's embeddings cases: case files, the load generator's endpoint, ours-only runs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import httpx
import jsonschema
import pytest

from harness import evidence
from harness.commands import bench_comparisons, with_records
from suites.throughput.runner import embedding_model_args, serves as runs_on
from harness.loadgen import Arrival, Conversation, run_conversations, run_load
from harness.metrics import repeat_metrics
from harness.servers import ServerSpec
from suites.throughput.cases import load_cases

CASES = """
[[case]]
name = "emb"
endpoint = "embeddings"
embedding_model = "all-minilm-l6-v2"
prompts = "p"
requests = 3
inputs = 2
concurrency = 2

[[case]]
name = "chat"
prompts = "p"
requests = 1
max_tokens = 4

[prompt_set.p]
template = "text {item} {uid}"
items = ["a", "b", "c"]
"""


def _cases(tmp_path, text=CASES):
    path = tmp_path / "cases.toml"
    path.write_text(text)
    return load_cases(path=path)


def test_an_embeddings_case_builds_embedding_bodies(tmp_path):
    emb, chat = _cases(tmp_path)
    assert emb.endpoint == "embeddings" and emb.ours_only and not chat.ours_only
    bodies = emb.bodies(model="smollm2-135m", repeat=1)
    assert len(bodies) == 3
    # The case's embedding model, not the chat model the bench passes; inputs cycle the prompt set.
    assert bodies[0] == {"model": "all-minilm-l6-v2", "input": ["text a r1-0-0", "text b r1-0-1"]}
    assert bodies[1]["input"] == ["text c r1-1-0", "text a r1-1-1"]
    described = emb.describe()
    assert described["endpoint"] == "embeddings" and described["inputs"] == 2 and "ours only" in described["servers"]
    assert "endpoint" not in chat.describe()


@pytest.mark.parametrize("extra, needle", [
    ('endpoint = "images"\nmax_tokens = 1', "unknown endpoint"),
    ('endpoint = "embeddings"', "needs embedding_model"),
    ('max_tokens = 4\nembedding_model = "x"', "belong to endpoint"),
])
def test_bad_embeddings_cases_are_refused(tmp_path, extra, needle):
    text = f'[[case]]\nname = "x"\nprompts = "p"\nrequests = 1\n{extra}\n\n[prompt_set.p]\ntemplate = "{{item}}"\nitems = ["a"]\n'
    with pytest.raises(ValueError, match=needle):
        _cases(tmp_path, text)


def test_the_shipped_embeddings_cases_load():
    cases = load_cases(["embeddings"])
    assert {c.name for c in cases} == {"embeddings-batch16", "embeddings-c8"}
    assert all(c.endpoint == "embeddings" and c.embedding_model == "all-minilm-l6-v2" for c in cases)


class FakeEmbeddingServer:
    def __init__(self, *, short: bool = False):
        self.requests: list[httpx.Request] = []
        self.short = short

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content)
        n = len(body["input"]) - (1 if self.short else 0)
        data = [{"object": "embedding", "index": i, "embedding": [0.6, 0.8]} for i in range(n)]
        return httpx.Response(200, json={"object": "list", "data": data, "model": body["model"],
                                         "usage": {"prompt_tokens": 7 * n, "total_tokens": 7 * n}})


def test_the_load_generator_posts_embeddings_unstreamed_and_counts_input_tokens(tmp_path):
    server = FakeEmbeddingServer()
    bodies = [{"model": "m", "input": ["a", "b"]}, {"model": "m", "input": ["c", "d"]}]
    records, wall = run_load("http://fake", bodies, Arrival(concurrency=2), endpoint="embeddings",
                             transport=httpx.MockTransport(server))
    assert [r.url.path for r in server.requests] == ["/v1/embeddings"] * 2
    assert all("stream" not in json.loads(r.content) for r in server.requests)
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert all(r["prompt_tokens"] == 14 and r["completion_tokens"] == 0 and r["ttft_s"] is None for r in records)
    schema = json.loads((evidence.SCHEMA_DIR / "raw_record.schema.json").read_text())
    for rec in records:
        tagged = {**rec, "server": "ours", "case": "emb", "repeat": 0, "concurrency": 2, "rate_rps": None}
        jsonschema.validate(tagged, schema, cls=jsonschema.Draft202012Validator)
    metrics = repeat_metrics(records, {"wall_s": 2.0})
    assert metrics["total_tok_per_s"] == 14.0 and metrics["requests_per_s"] == 1.0
    assert metrics["output_tok_per_s"] == 0.0 and metrics["e2e_p50_s"] is not None


def test_a_short_answer_is_not_ok(tmp_path):
    records, _ = run_load("http://fake", [{"model": "m", "input": ["a", "b"]}], Arrival(), endpoint="embeddings",
                          transport=httpx.MockTransport(FakeEmbeddingServer(short=True)))
    assert records[0]["status"] == "incomplete" and "expected 2 embeddings" in records[0]["error"]


def test_embeddings_have_no_turns_and_endpoints_are_known():
    with pytest.raises(ValueError, match="no turns"):
        run_conversations("http://fake", [Conversation({"input": ["a"]}, ("more",))], Arrival(), endpoint="embeddings")
    with pytest.raises(ValueError, match="unknown endpoint"):
        run_load("http://fake", [], Arrival(), endpoint="images")


def test_ours_get_the_embedding_model_and_peers_skip_the_case(tmp_path):
    emb, chat = _cases(tmp_path)
    servers = [ServerSpec("ours", "mlx-proof"), ServerSpec("mlx-lm", "mlx-lm"),
               ServerSpec("ours-nocache", "mlx-proof", extra_args=("--prefix-cache-bytes", "0"))]
    assert embedding_model_args([emb, chat]) == ("--embedding-model", "all-minilm-l6-v2")
    assert embedding_model_args([chat]) == ()
    ours, peer = (SimpleNamespace(spec=s) for s in servers[:2])
    assert runs_on(ours, emb) and runs_on(ours, chat) and runs_on(peer, chat) and not runs_on(peer, emb)


def test_cases_with_different_embedding_models_cannot_share_a_server(tmp_path):
    emb, _ = _cases(tmp_path)
    other = SimpleNamespace(endpoint="embeddings", embedding_model="another")
    with pytest.raises(ValueError, match="several embedding models"):
        embedding_model_args([emb, other])


def test_a_peer_that_ran_no_case_is_not_compared():
    servers = [{"label": "ours", "kind": "mlx-proof", "status": "ran", "prefix_cache": "on"},
               {"label": "mlx-lm", "kind": "mlx-lm", "status": "ran", "prefix_cache": "on"}]
    records = [{"type": "run", "server": "ours", "case": "embeddings-c8", "repeat": 0, "wall_s": 1.0}]
    assert [s["label"] for s in with_records(servers, records)] == ["ours"]
    assert bench_comparisons(with_records(servers, records)) == []
    assert len(bench_comparisons(servers)) == 1  # what made the run fail before
