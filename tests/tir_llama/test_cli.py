"""The `tir-llama` command line against the emulator."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY
from tests.support.emulator import Emulator, Reply
from tir_llama.cli import main, parser


def run(
    argv: list[str], stdin: str = "", monkeypatch: pytest.MonkeyPatch | None = None
) -> tuple[int, str]:
    out = io.StringIO()
    if monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(argv, out), out.getvalue()


def test_doctor_ok(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    monkeypatch.setenv("TIR_PROJECT_ID", "p-42")
    code, text = run(["--host", emulator.url, "doctor"])
    assert code == 0, text
    assert f"url:         {emulator.url}/project/p-42/genai/llama3_1_8b_instruct/v1/" in text
    assert "set (from TIR_API_KEY; never shown)" in text
    assert "request:     ok in" in text
    assert "native tool calling is on" in text
    assert TEST_KEY not in text
    assert emulator.requests[0].json["max_tokens"] == 1


def test_doctor_without_native_tools(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    emulator.reject_tools = True
    code, text = run(["--base-url", emulator.base_url, "doctor"])
    assert code == 0, text
    assert "native tool calling is off here" in text


def test_doctor_without_a_key(emulator: Emulator) -> None:
    code, text = run(["--base-url", emulator.base_url, "doctor"])
    assert code == 2
    assert "set TIR_API_KEY" in text
    assert emulator.requests == []


def test_doctor_without_a_project(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    code, text = run(["doctor"])
    assert code == 2
    assert "TIR_PROJECT_ID" in text


def test_doctor_reports_a_failing_endpoint(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    emulator.require_key = "another"
    code, text = run(["--base-url", emulator.base_url, "doctor"])
    assert code == 1
    assert "failed: The TIR API token was refused" in text
    assert "The server said: Invalid API key (HTTP 401)" in text


def test_chat_streams_and_prints_usage(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    emulator.queue(Reply(text="Hi there."), Reply(text="Bye."))
    code, text = run(
        ["--base-url", emulator.base_url, "chat", "--system", "Be brief."],
        stdin="hello\nbye now\n\n",
        monkeypatch=monkeypatch,
    )
    assert code == 0, text
    assert "Hi there.\n[" in text and "Bye.\n[" in text
    assert "in, " in text and " out]" in text
    second = emulator.requests[1].json["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"] == "Hi there."


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "tir-llama"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "doctor" in result.stdout and "chat" in result.stdout


# -- what every command owes a person at a shell -------------------------------------------


def command(
    *argv: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`tir-llama` in a process of its own, with only `env` for TIR."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TIR_", "E2E_TIR_"))}
    return subprocess.run(
        [sys.executable, "-m", "tir_llama", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )


def test_errors_go_to_stderr_and_stdout_stays_clean(emulator: Emulator) -> None:
    result = command("doctor")
    assert result.returncode == 2
    assert "TIR_API_KEY" in result.stderr and "TIR_PROJECT_ID" in result.stderr
    assert "missing" not in result.stdout and "error" not in result.stdout


def test_a_missing_setting_has_one_exit_status_in_every_command(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,prompt\n1,hi\n")
    statuses = {
        "doctor": command("doctor").returncode,
        "chat": command("chat", stdin="hello\n").returncode,
        "batch": command("batch", str(tmp_path / "in.csv"), str(tmp_path / "out")).returncode,
    }
    assert statuses == {"doctor": 2, "chat": 2, "batch": 2}


def test_a_key_pasted_with_quotes_is_one_line_in_every_command(tmp_path: Path) -> None:
    # pydantic's refusal ("1 validation error for TIRConnection ... [type=value_error] For
    # further information visit https://errors.pydantic.dev/...") was printed as it came.
    (tmp_path / "in.csv").write_text("id,prompt\n1,hi\n")
    env = {"TIR_API_KEY": '"sk-quoted-4b1d9e"', "TIR_BASE_URL": "http://127.0.0.1:9/v1"}
    for argv in (
        ["doctor"],
        ["chat"],
        ["batch", str(tmp_path / "in.csv"), str(tmp_path / "out")],
    ):
        result = command(*argv, env=env, stdin="hello\n")
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: The API key (TIR_API_KEY) is wrapped in quotes")
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "pydantic" not in result.stderr and "sk-quoted-4b1d9e" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_messages_name_flags_and_variables_not_python() -> None:
    missing = command("doctor", env={"TIR_API_KEY": TEST_KEY}).stderr
    assert "--project-id" in missing and "--base-url" in missing
    insecure = command(
        "chat", env={"TIR_API_KEY": TEST_KEY, "TIR_BASE_URL": "http://example.com/v1"}
    ).stderr
    assert "--allow-insecure-http" in insecure
    for text in (missing, insecure, command("doctor").stderr):
        assert "=..." not in text and "=True" not in text and "base_url" not in text, text


def test_version() -> None:
    result = command("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tir-llama {version('tir-llama')}"


def test_connection_flags_after_the_command(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    code, text = run(["doctor", "--base-url", emulator.base_url, "--model", "m2"])
    assert code == 0, text
    assert emulator.requests[0].json["model"] == "m2"
    # One before the command's name is not put back to its default by the command.
    code, text = run(["--model", "m1", "doctor", "--base-url", emulator.base_url])
    assert code == 0, text
    chats = [r for r in emulator.requests if r.path.endswith("/chat/completions")]
    assert chats[-1].json["model"] == "m1"


@pytest.mark.parametrize("where", ["before", "after"])
def test_timeout_zero_is_one_line(where: str) -> None:
    argv = ["--timeout", "0", "doctor"] if where == "before" else ["doctor", "--timeout", "0"]
    result = command(*argv)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "--timeout" in result.stderr and "above 0" in result.stderr
    assert "pydantic" not in result.stderr and "Traceback" not in result.stderr


def test_every_flag_has_help_without_backticks() -> None:
    top = parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("tir-llama", top), *commands.choices.items()]:
        for action in sub._actions:
            if action.option_strings or action.dest in ("input", "output"):
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        text = sub.format_help()
        assert "`" not in text, f"{name} --help shows backticks:\n{text}"
    # The exit statuses are said where a person looks for them.
    assert "exit status: 0" in " ".join(top.format_help().split())


def test_batch_on_a_bare_install_names_the_pip_line(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("id,prompt\n1,hi\n")
    # A bare install: neither Ray nor pyarrow can be imported.
    bare = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['ray'] = None\n"
        "from tir_llama.cli import main\n"
        f"sys.exit(main(['batch', {str(tmp_path / 'in.csv')!r}, {str(tmp_path / 'out')!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", bare], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert 'pip install "tir-llama[ray]"' in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_doctor_probes_other_models_once_and_briefly(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stalled embedding server: one try, within the probe's time, never the retries of a
    # request (3 tries of 60 s held doctor for minutes).
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    monkeypatch.setenv("TIR_EMBEDDING_MODEL", "e5")
    emulator.queue_embeddings(*[Reply(delay=30.0)] * 3)
    out, err = io.StringIO(), io.StringIO()
    code = main(["--base-url", emulator.base_url, "--timeout", "1", "doctor"], out, err)
    assert code == 1
    assert "embeddings:" in err.getvalue() and "timed out" in err.getvalue()
    assert len([r for r in emulator.requests if r.path.endswith("/embeddings")]) == 1


def test_doctor_tries_the_chat_request_once(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Doctor reports what the endpoint does. Retried, a server that took the connection and
    # never answered kept it silent for 3 x the timeout (three minutes by default).
    monkeypatch.setenv("TIR_API_KEY", TEST_KEY)
    emulator.queue(Reply(delay=30.0))
    out, err = io.StringIO(), io.StringIO()
    code = main(["--base-url", emulator.base_url, "--timeout", "1", "doctor"], out, err)
    assert code == 1
    assert "request:     failed" in err.getvalue() and "timed out" in err.getvalue()
    assert len(emulator.requests) == 1
    emulator.queue(Reply(status=503, message="warming up"))
    code = main(["--base-url", emulator.base_url, "doctor"], out, err)
    assert code == 1 and "warming up" in err.getvalue()


def test_a_folder_of_the_users_own_files_is_not_offered_resume(tmp_path: Path) -> None:
    # It said "already holds rows ... --resume", and --resume then said "not Parquet".
    (tmp_path / "in.csv").write_text("id,prompt\n1,hi\n")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "metadata.json").write_text('{"owner": "me"}')
    env = {"TIR_API_KEY": TEST_KEY, "TIR_BASE_URL": "http://127.0.0.1:9/v1"}
    result = command("batch", str(tmp_path / "in.csv"), str(folder), env=env)
    assert result.returncode == 2
    assert "not the output of a tir-llama job (metadata.json)" in result.stderr
    assert "--resume" not in result.stderr
    assert [p.name for p in folder.iterdir()] == ["metadata.json"]
    assert (folder / "metadata.json").read_text() == '{"owner": "me"}'
