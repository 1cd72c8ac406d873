"""validate runs exactly what a profile's gates read, as one bundle; regress is compare against the
code that published text-default."""

from pathlib import Path
from types import SimpleNamespace

import pytest
from harness import cli, profile_commands
from harness.profiles import load_profiles


@pytest.fixture(scope="module")
def profiles():
    return load_profiles()


def args(tmp_path: Path, **extra):
    return SimpleNamespace(**{"evidence_dir": tmp_path / "e", "reports_dir": tmp_path / "r",
                              "log_dir": tmp_path / "l", "suite_arg": [], **extra})


def test_validate_runs_the_suites_the_gates_read_and_nothing_else(profiles, tmp_path):
    commands = profile_commands.plan_suites(profiles.get("text-default"), "smollm2-135m", args(tmp_path), "B1")
    assert [c[:3] for c in commands] == [["bench", "--suite", "throughput"], ["contracts", "--profile", "text-default"]]
    throughput, contracts = commands
    assert throughput[3:7] == ["--model", "smollm2-135m", "--profile", "text-default"]
    assert throughput[throughput.index("--bundle") + 1] == contracts[contracts.index("--bundle") + 1] == "B1"
    assert "--peers" in throughput and "--model" not in contracts
    for name, profile in profiles.profiles.items():
        planned = profile_commands.plan_suites(profile, profile.models[0], args(tmp_path), "B")
        wanted = {g.suite for g in (*profile.gates, *profile.warn)}
        assert len(planned) == len(wanted), name


def test_suite_args_extend_the_profiles(profiles, tmp_path):
    a = args(tmp_path, suite_arg=["throughput=--repeats=2"])
    throughput = profile_commands.plan_suites(profiles.get("text-default"), "smollm2-135m", a, "B")[0]
    assert throughput.index("--repeats=2") > throughput.index("--repeats")  # later wins
    with pytest.raises(ValueError, match="SUITE one of throughput, contracts"):
        profile_commands.plan_suites(profiles.get("text-default"), "smollm2-135m",
                                     args(tmp_path, suite_arg=["tools=--limit=1"]), "B")


def test_a_client_profile_is_validated_where_contracts_files_its_evidence(profiles, tmp_path):
    with pytest.raises(ValueError, match="--model smollm2-135m"):
        profile_commands.plan_suites(profiles.get("codex"), "qwen2.5-coder-0.5b", args(tmp_path), "B")


def test_dry_run_runs_nothing(monkeypatch, capsys):
    monkeypatch.setattr(cli, "main", lambda argv: pytest.fail(f"ran {argv}"))
    assert profile_commands.validate(
        cli.parser().parse_args(["validate", "--profile", "text-json", "--dry-run"]), console=_Console()) == 0
    assert "tools --model qwen2.5-coder-0.5b --profile text-json --categories simple" in capsys.readouterr().out


class _Console:
    def print(self, *a, **k):
        print(*a)


def test_regress_is_compare_of_the_base_against_the_working_tree(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(cli, "main", lambda argv: seen.append(argv) or 1)
    parsed = cli.parser().parse_args(["regress", "--base", "abc123", "--evidence-dir", str(tmp_path)])
    assert profile_commands.regress(parsed, console=_Console()) == 1
    argv = seen[0]
    assert argv[:3] == ["compare", "abc123", "WORKTREE"]
    assert argv[argv.index("--repeats") + 1] == str(cli.PAIRS_PER_DECISION)
    assert argv[argv.index("--threshold") + 1] == str(cli.REGRESSION_THRESHOLD)


def test_regress_falls_back_to_the_previous_commit_without_published_evidence(tmp_path, capsys):
    (tmp_path / "evidence").mkdir()
    assert profile_commands.published_base(tmp_path / "evidence", console=_Console()) == "HEAD~1"
    assert "comparing against HEAD~1" in capsys.readouterr().out
