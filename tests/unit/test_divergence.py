"""The divergence suite: the comparison maths on hand-made token ids, the protocol over a fake HTTP
server, the statistics against scipy, the schemas, the case files and the report section."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import httpx
import jsonschema
import numpy as np
import pytest
from scipy import stats as sps

from harness import evidence, stats
from harness.evidence import SCHEMA_DIR
from suites.divergence import cases, compare, runner, summary

# --- comparison maths ---------------------------------------------------------------------------

@pytest.mark.parametrize(("ref", "other", "index", "agree"), [
    ([5, 6, 7], [5, 6, 7], None, 1.0),
    ([], [], None, 1.0),
    ([5, 6, 7, 8, 9, 1, 2, 3, 4, 0], [5, 6, 7, 1, 9, 1, 2, 3, 4, 0], 3, 0.3),
    ([5, 6, 7], [9, 6, 7], 0, 0.0),
    ([5, 6, 7], [5, 6], 2, 2 / 3),  # stopped early: diverges where it ended
    ([5, 6], [5, 6, 7, 8], 2, 0.5),  # ran on past the reference's end
    ([1], [], 0, 0.0),
])
def test_first_divergence_and_agreement(ref, other, index, agree):
    assert compare.first_divergence(ref, other) == index
    assert compare.agreement(ref, other) == pytest.approx(agree)


def test_ids_are_compared_not_words():
    # Two tokenisations of the same text ("New York" as one token, or two) are different outputs.
    assert compare.first_divergence([3, 17, 4], [3, 12, 13, 4]) == 1


def test_margin_is_top1_minus_top2_whatever_the_order():
    assert compare.margin([{"logprob": -2.5}, {"logprob": -0.25}]) == pytest.approx(2.25)
    assert compare.margin([{"logprob": -0.1}]) is None
    assert compare.margin_at([0.5, 0.01, 3.0], 1) == 0.01
    assert compare.margin_at([0.5], 1) is None and compare.margin_at([0.5], None) is None


def test_logprob_drift_is_measured_only_while_tokens_match():
    assert compare.max_abs_logprob_delta([-1.0, -0.5, -0.2], [-1.0, -0.75, -3.0], upto=2) == pytest.approx(0.25)
    assert compare.max_abs_logprob_delta([-1.0], [-1.5], upto=0) is None


def test_match_block():
    ref = {"token_ids": [1, 2, 3, 4], "logprobs": [-0.1, -0.2, -0.3, -0.4], "margins": [2.0, 1.5, 0.02, 1.0]}
    other = {"token_ids": [1, 2, 9, 4], "logprobs": [-0.1, -0.25, -0.9, -0.4], "margins": [2.0, 1.4, 0.1, 1.0]}
    m = compare.match(ref, other)
    assert m == {"exact": False, "first_divergence": 2, "agreement": 0.5, "margin": 0.02, "reference_length": 4,
                 "length": 4, "max_abs_logprob_delta": pytest.approx(0.05)}
    same = compare.match(ref, ref)
    assert same["exact"] and same["first_divergence"] is None and same["margin"] is None
    assert same["max_abs_logprob_delta"] == 0.0


# --- the runner over a fake server --------------------------------------------------------------

PROMPTS = ("What is 2+2?", "Name a colour.", "Say hi.")


def fake_server(*, batched_changes: set[str], drop_ids: bool = False):
    """A chat endpoint whose answer depends on the prompt, and, for prompts in `batched_changes`,
    changes at token 2 whenever other requests are in flight (how the fake sees a batch)."""
    seen: list[dict] = []
    in_flight = {"n": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        in_flight["n"] += 1
        company = in_flight["n"] > 1
        await asyncio.sleep(0.01)  # let the rest of a batch arrive
        batched = company or in_flight["n"] > 1
        text = body["messages"][0]["content"]
        base = sum(map(ord, text)) % 1000
        ids = [base + i for i in range(min(body["max_tokens"], 5))]
        if batched and text in batched_changes:
            ids[2] = 7
        in_flight["n"] -= 1
        content = [{"token": str(t), "logprob": -0.5, "bytes": [], "top_logprobs": [
            {"token": str(t), "logprob": -0.5, "bytes": []}, {"token": "x", "logprob": -0.75, "bytes": []}]}
            for t in ids]
        choice = {"index": 0, "message": {"role": "assistant", "content": "..."}, "finish_reason": "length",
                  "logprobs": {"content": content, "refusal": None}}
        if not drop_ids:
            choice["token_ids"] = ids
        return httpx.Response(200, json={"choices": [choice], "usage": {"prompt_tokens": 9, "completion_tokens": 5}})

    return httpx.MockTransport(handler), seen


def small_case(**kw) -> cases.Case:
    prompts = tuple(cases.Prompt(f"t-{i:02d}", "t", text, 4) for i, text in enumerate(PROMPTS, start=1))
    distractors = tuple(cases.Distractor(f"d-{i:02d}", f"distract {'x ' * 10 * i}", 8) for i in range(1, 4))
    return cases.Case("tiny", prompts, distractors, kw.pop("concurrency", (2, 3)), **kw)


def test_protocol_reference_batches_then_control():
    transport, seen = fake_server(batched_changes={"Name a colour."})
    case = small_case()
    records = asyncio.run(runner.run_protocol("http://fake", case, model="m", transport=transport))
    kinds = Counter((r["condition"], r["batch_size"]) for r in records)
    assert kinds == {("reference", 1): 3, ("batch", 2): 3, ("batch", 3): 3, ("control", 1): 3}
    assert [r["condition"] for r in records][:3] == ["reference"] * 3 and records[-1]["condition"] == "control"
    assert len(seen) == 3 + 3 * 2 + 3 * 3 + 3  # batches carry size - 1 distractors each
    for body in seen:
        assert body["temperature"] == 0.0 and body["return_token_ids"] is True
        assert body["logprobs"] is True and body["top_logprobs"] == 2 and body["model"] == "m"
    by = {(r["prompt"], r["condition"], r["batch_size"]): r for r in records}
    assert by[("t-02", "batch", 2)]["match"]["first_divergence"] == 2
    assert by[("t-02", "batch", 2)]["match"]["margin"] == pytest.approx(0.25)
    assert by[("t-01", "batch", 3)]["match"]["exact"] and by[("t-02", "control", 1)]["match"]["exact"]
    assert all(r["match"] is None for r in records if r["condition"] == "reference")
    batch = by[("t-03", "batch", 3)]
    assert len(batch["distractors"]) == 2 and batch["position"] == 2 % 3 and batch["distractor_errors"] == 0
    # A distractor is asked for at least as many tokens as the prompt it keeps company with.
    assert all(b["max_tokens"] >= 4 for b in seen)


def test_records_satisfy_the_raw_schema():
    transport, _ = fake_server(batched_changes={"Say hi."})
    records = asyncio.run(runner.run_protocol("http://fake", small_case(), model=None, transport=transport))
    validator = jsonschema.Draft202012Validator(json.loads((SCHEMA_DIR / "raw_record.schema.json").read_text()))
    for r in records:
        validator.validate({"type": r["type"], "server": "ours", "case": "tiny", "repeat": 0, **r})


def test_a_server_without_token_ids_is_an_error_not_a_match():
    transport, _ = fake_server(batched_changes=set(), drop_ids=True)
    records = asyncio.run(runner.run_protocol("http://fake", small_case(concurrency=(2,)), model=None,
                                              transport=transport))
    assert all(r["status"] == "error" and "token_ids" in r["error"] and r["match"] is None for r in records)


def test_http_errors_are_recorded():
    transport = httpx.MockTransport(lambda request: httpx.Response(400, json={"error": {"message": "no"}}))
    records = asyncio.run(runner.run_protocol("http://fake", small_case(concurrency=(2,)), model=None,
                                              transport=transport))
    assert {r["http_status"] for r in records} == {400} and all(r["match"] is None for r in records)


def test_distractors_rotate_through_the_pool():
    pool = tuple(cases.Distractor(f"d-{i}", "x", 1) for i in range(5))
    assert [d.id for d in runner.distractors_for(pool, 0, 3)] == ["d-0", "d-1", "d-2"]
    assert [d.id for d in runner.distractors_for(pool, 1, 3)] == ["d-3", "d-4", "d-0"]


# --- statistics ---------------------------------------------------------------------------------

def rec(prompt: str, repeat: int, condition: str, size: int, ids: list[int], ref: list[int],
        margins: list[float] | None = None, status: str = "ok") -> dict:
    sample = {"token_ids": ids, "logprobs": [-0.1] * len(ids), "margins": margins or [1.0] * len(ids)}
    reference = {"token_ids": ref, "logprobs": [-0.1] * len(ref), "margins": margins or [1.0] * len(ref)}
    return {"type": "divergence", "server": "ours", "case": "c", "repeat": repeat, "prompt": prompt, "set": "s",
            "condition": condition, "batch_size": size, "status": status,
            "match": compare.match(reference, sample) if status == "ok" and condition != "reference" else None}


def synthetic() -> list[dict]:
    ref = [1, 2, 3, 4, 5, 6, 7, 8]
    out = []
    for run in range(3):
        for p in range(6):
            out.append(rec(f"p{p}", run, "reference", 1, ref, ref))
            out.append(rec(f"p{p}", run, "control", 1, ref, ref))
            # p0 always diverges at token 4 in batches; p1 only in run 2, at token 1 (a near-tie)
            diverged = ref[:4] + [9, 9, 9, 9] if p == 0 else ref[:1] + [0] * 7 if (p == 1 and run == 2) else ref
            out.append(rec(f"p{p}", run, "batch", 4, diverged, ref,
                           margins=[1.0, 0.05, 1, 1, 0.5, 1, 1, 1]))
    return out


def test_cells_noise_floor_first_and_statistics_from_scipy():
    block = summary.summarize_divergence(synthetic(), min_exact=0.9)
    control, batch = block["cells"]
    assert (control["condition"], batch["condition"], batch["batch_size"]) == ("control", "batch", 4)
    assert control["exact"]["rate"] == 1.0 and control["first_divergence"]["n"] == 0
    # Exact over prompts: p0 and p1 are not exact in every run -> 4 of 6, Wilson from scipy.
    e = batch["exact"]
    assert (e["prompts"], e["n"], e["comparisons_exact"]) == (4, 6, 18 - 3 - 1)
    ci = sps.binomtest(4, 6).proportion_ci(0.95, method="wilson")
    assert (e["ci_low"], e["ci_high"]) == pytest.approx((ci.low, ci.high))
    # Agreement: per prompt over runs, then a bootstrap over prompts.
    per_prompt = [0.5, (1 + 1 + 1 / 8) / 3, 1, 1, 1, 1]
    assert batch["agreement"]["mean"] == pytest.approx(np.mean(per_prompt))
    assert batch["agreement"]["ci_low"] == pytest.approx(stats.bootstrap_mean(per_prompt)["ci_low"])
    # Per run: a t interval over the runs' means.
    runs = batch["per_run"]["agreement"]
    assert runs == pytest.approx([(0.5 + 5) / 6, (0.5 + 5) / 6, (0.5 + 1 / 8 + 4) / 6])
    t = sps.t.interval(0.95, 2, loc=np.mean(runs), scale=sps.sem(runs))
    assert (batch["per_run"]["agreement_ci"]["ci_low"], batch["per_run"]["agreement_ci"]["ci_high"]) == \
        pytest.approx(t)
    assert batch["first_divergence"]["counts"] == [[1, 1], [4, 3]]
    assert batch["margin"] == {"n": 4, "median": 0.5, "min": 0.05, "near_ties": 1}
    # 4/6 exact: Wilson [0.30, 0.903] straddles 0.9; 6/6: [0.61, 1] is too few prompts to meet it.
    assert batch["verdict"] == "inconclusive" and control["verdict"] == "inconclusive"
    assert summary.summarize_divergence(synthetic(), min_exact=0.95)["cells"][1]["verdict"] == "fails"


def test_verdicts_read_the_interval_bounds():
    assert summary.verdict(0.93, 1.0, min_exact=0.9) == "meets"
    assert summary.verdict(0.5, 0.89, min_exact=0.9) == "fails"
    assert summary.verdict(0.85, 0.99, min_exact=0.9) == "inconclusive"
    assert summary.verdict(None, None, min_exact=0.9) == "inconclusive"


def test_failed_generations_are_counted_not_compared():
    records = synthetic() + [rec("p9", 0, "batch", 4, [], [1], status="error")]
    batch = summary.summarize_divergence(records)["cells"][1]
    assert batch["errors"] == 1 and batch["comparisons"] == 18


def test_summary_satisfies_the_schema_and_recomputes_with_pandas():
    import pandas as pd

    records = synthetic()
    body = summary.summarize(records, cases=[cases.Case("c", (), (), (4,), min_exact=0.9)])
    doc = {"schema_version": 1, "run_id": evidence.new_run_id("divergence"), **body, "validation": None}
    jsonschema.validate(doc, json.loads((SCHEMA_DIR / "summary.schema.json").read_text()),
                        cls=jsonschema.Draft202012Validator)
    from harness.report_divergence import DIVERGENCE_RECOMPUTE

    one_liner = DIVERGENCE_RECOMPUTE.split('"')[1].split("; ")
    frame = pd.DataFrame(records)
    namespace = {"pd": pd}
    namespace["r"] = frame
    for line in one_liner[2:-1]:
        exec(line, namespace)
    means = namespace["d"].groupby(["server", "case", "condition", "batch_size"])[["exact", "agreement"]].mean()
    batch = body["divergence"]["cells"][1]
    assert means.loc[("ours", "c", "batch", 4), "exact"] == pytest.approx(batch["exact"]["comparisons_exact"] / 18)
    with pytest.raises(ValueError, match="no case settings"):
        summary.summarize(records, cases=[])


# --- case files ---------------------------------------------------------------------------------

def test_the_shipped_prompt_sets():
    sets = cases.load_prompts()
    assert set(sets) >= {"short", "open", "long"}
    every = [p for ps in sets.values() for p in ps]
    assert len(every) >= 50 and len({p.id for p in every}) == len(every)
    lengths = {name: np.median([len(p.text.split()) for p in ps]) for name, ps in sets.items()}
    assert lengths["long"] > 10 * lengths["short"]
    (default,) = cases.load_cases(["default"])
    assert len(default.prompts) >= 50 and default.concurrency == (2, 4, 8) and default.control


def test_distractors_vary_in_length():
    words = sorted(len(d.text.split()) for d in cases.load_distractors())
    assert len(words) >= 8 and words[0] <= 3 and words[-1] >= 200


def test_command_line_overrides_and_errors():
    (smoke,) = cases.load_cases(["ci"], concurrency=(2, 8), limit=2, min_exact=0.5)
    assert (smoke.concurrency, len(smoke.prompts), smoke.min_exact) == ((2, 8), 2, 0.5)
    assert cases.parse_concurrency("2,4,8") == (2, 4, 8) and cases.parse_concurrency(None) is None
    for bad in ("1,2", "2,2", "x"):
        with pytest.raises(ValueError):
            cases.parse_concurrency(bad)
    with pytest.raises(ValueError, match="known: .*default"):
        cases.load_cases(["nope"])


def test_describe_goes_into_the_manifest():
    (smoke,) = cases.load_cases(["smoke"])
    d = smoke.describe()
    assert d["prompts"] == ["short-01", "short-02", "short-03"] and d["max_tokens"] == {"short": 16}
    assert len(d["texts_sha256"]) == 64 and d["top_logprobs"] == 2


# --- the report section -------------------------------------------------------------------------

def test_report_renders_the_noise_floor_apart_with_figures(tmp_path):
    from harness.report import render

    records = [{**r, "position": 0, "distractors": [], "distractor_errors": 0, "error": None, "http_status": 200,
                "latency_s": 0.1, "finish_reason": "length", "prompt_tokens": 3, "token_ids": [1], "logprobs": [-0.1],
                "margins": [1.0]} for r in synthetic()]
    body = summary.summarize(records, cases=[cases.Case("c", (), (), (4,), min_exact=0.9)])
    run = type("Run", (), {"path": tmp_path / "evidence" / "m" / "p" / "r", "records": records,
                           "manifest": {"suite": "divergence", "run_id": "20260101T000000Z-divergence-abcdef"},
                           "summary": {"run_id": "20260101T000000Z-divergence-abcdef", **body}})()
    html, md = render([run], tmp_path / "reports")
    page, text = html.read_text(), md.read_text()
    assert "noise floor: serial vs serial" in page and "batch of 4" in page
    assert page.count("data:image/png;base64") == 2  # agreement vs batch size; first-divergence histogram
    assert "noise floor: serial vs serial" in text and "r.type=='divergence'" in text
    assert "null" not in text and "nan" not in text.lower()


def test_step_token_probe_refuses_a_missing_folder_without_a_download(tmp_path, capsys):
    from suites.divergence import step_tokens

    assert step_tokens.main(["--help"]) == 0 and "step_tokens" in capsys.readouterr().out
    assert step_tokens.main([str(tmp_path / "no-such-model")]) == 2
    assert "is not a model folder" in capsys.readouterr().err
    assert step_tokens.main([]) == 2
