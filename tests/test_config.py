"""config.py: how each kind of option reads text, TOML values and values already read; that every
check names its option wherever the value came from (command line, BATCHGPT_* variable, job file,
library caller); the precedence command line > environment > job file > default; the defaults
derived from other options; and the result-shaping options a checkpoint records.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from support import CLI, batchgpt, cli_env, write_prompts

from batchgpt.config import (
    OPTIONS,
    Choice,
    File,
    Flag,
    Integer,
    Kind,
    Number,
    Option,
    Rate,
    RunConfig,
    ShardKind,
    Text,
    Texts,
    Url,
    option,
    run_options,
)
from batchgpt.errors import UsageError
from batchgpt.formats import FORMATS, Result, encode
from batchgpt.inputs import DEFAULT_MAX_LINE_BYTES, Shard
from batchgpt.providers import backend_class

# kinds ------------------------------------------------------------------------------------------

#: (kind, value as given, value as read): text from a command line or variable, TOML values,
#: and values a library caller already read.
READS: list[tuple[Kind, Any, Any]] = [
    (Text(), "gpt-4o", "gpt-4o"),
    (Choice(("native", "openai")), "openai", "openai"),
    (Integer(1), "5", 5),
    (Integer(1), " 7 ", 7),
    (Integer(1), 5, 5),
    (Integer(0), "0", 0),
    (Number(), "2.5", 2.5),
    (Number(), 3, 3.0),
    (Number(), 0.25, 0.25),
    (Number(positive=False), "0", 0.0),
    (Rate(), "2", 2.0),
    (Rate(), "2/s", 2.0),
    (Rate(), "120/min", 2.0),
    (Rate(), " 90 / m ", 1.5),
    (Rate(), "7200/h", 2.0),
    (Rate(), "0", 0.0),
    (Rate(), 3, 3.0),
    (Rate(), 0.5, 0.5),
    (File(), "out/results.jsonl", Path("out/results.jsonl")),
    (File(), Path("x.jsonl"), Path("x.jsonl")),
    (ShardKind(), "1/3", Shard(1, 3)),
    (ShardKind(), Shard(0, 2), Shard(0, 2)),
    *[(Flag(), text, True) for text in ("1", "true", "TRUE", "yes", "on", True)],
    *[(Flag(), text, False) for text in ("0", "false", "no", "off", "", False)],
    (Texts(), "http://a:1", ["http://a:1"]),
    (Texts(), ["http://a:1", "http://b:2"], ["http://a:1", "http://b:2"]),
    (Texts(), ("http://a:1",), ["http://a:1"]),
    (Url(), "https://chatgpt.es", "https://chatgpt.es"),
    (Url(), "http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
    (Url(), "https://example.org/chat/?lang=es", "https://example.org/chat/?lang=es"),
    (Url(), "https://example.es/chat español/", "https://example.es/chat español/"),
]


@pytest.mark.parametrize(("kind", "given", "read"), READS, ids=repr)
def test_each_kind_reads_text_toml_values_and_values_already_read(
    kind: Kind, given: Any, read: Any
) -> None:
    assert kind.parse(given) == read
    assert type(kind.parse(given)) is type(read)


#: (kind, bad value, the reason the check gives).
REFUSALS: list[tuple[Kind, Any, str]] = [
    (Text(), 5, "must be text, not int"),
    (Choice(("native", "openai")), "xml", "must be one of native, openai, not 'xml'"),
    (Integer(1), "four", "must be a whole number, not 'four'"),
    (Integer(1), 1.5, "must be a whole number, not 1.5"),
    (Integer(1), True, "must be a whole number, not True"),
    (Integer(1), "0", "must be at least 1, not 0"),
    (Integer(0), -1, "must be at least 0, not -1"),
    (Number(), "soon", "must be a number, not 'soon'"),
    (Number(), math.inf, "must be a number, not inf"),
    (Number(), "nan", "must be a number, not nan"),
    (Number(), False, "must be a number, not False"),
    (Number(), 0, "must be above 0, not 0"),
    (Number(), "-2", "must be above 0, not -2"),
    (Number(positive=False), -0.5, "must be at least 0, not -0.5"),
    (Rate(), "fast", "use a number per s, min or h"),
    (Rate(), "2/week", "use a number per s, min or h"),
    (Rate(), -1, "must not be negative"),
    (File(), "", "must be a path, not ''"),
    (File(), 3, "must be a path, not 3"),
    (ShardKind(), "3/3", "3/3"),
    (Flag(), "maybe", "must be true or false, not 'maybe'"),
    (Flag(), 1, "must be true or false, not 1"),
    (Texts(), [1, 2], "must be a list of strings"),
    (Url(), "chatgpt.es", "must be an http:// or https:// URL with a host, not 'chatgpt.es'"),
    (Url(), "ftp://x.org", "must be an http:// or https:// URL"),
    (Url(), "https://", "must be an http:// or https:// URL"),
    (Url(), "http://:80/", "must be an http:// or https:// URL with a host"),
    (Url(), "https://h:99999/", "with a port from 0 to 65535"),
    (Url(), "https://example.org/a\tb", "without control characters"),
    (Url(), "https://me:s3cret@example.org:99999/", "https://***@example.org:99999/"),
    (Url(), 7, "must be text, not int"),
]


@pytest.mark.parametrize(("kind", "bad", "reason"), REFUSALS, ids=repr)
def test_each_kind_refuses_what_it_cannot_read_saying_why(
    kind: Kind, bad: Any, reason: str
) -> None:
    with pytest.raises((ValueError, UsageError)) as caught:
        kind.parse(bad)
    error = caught.value
    assert reason in (error.message if isinstance(error, UsageError) else str(error))


def test_toml_types_are_the_values_a_job_file_may_hold_for_each_kind() -> None:
    assert Integer().toml_types == (int,)
    assert Number().toml_types == (int, float)
    assert Rate().toml_types == (str, int, float)
    assert Flag().toml_types == (bool,)
    assert Texts().toml_types == (list, tuple)
    for kind in (Text(), Url(), Choice(("a",)), File(), ShardKind()):
        assert kind.toml_types == (str,)


#: A value each kind refuses, to check every option's message.
BAD_VALUE: dict[type[Kind], Any] = {
    Text: 5,
    Url: "example.org",
    Choice: "no-such-choice",
    Integer: "many",
    Number: "soon",
    Rate: "fast",
    File: "",
    ShardKind: "9/3",
    Flag: "maybe",
    Texts: [1],
}


@pytest.mark.parametrize("declared", run_options(), ids=lambda o: o.name)
def test_every_check_names_its_option(declared: Option, tmp: Path) -> None:
    values = {"input": str(tmp / "prompts.jsonl"), declared.name: BAD_VALUE[type(declared.kind)]}
    with pytest.raises(UsageError) as caught:
        RunConfig.build(values)
    assert caught.value.message.startswith(f"{declared.flag} "), caught.value.message
    assert caught.value.exit_code == 2


def test_a_secret_is_never_quoted_in_its_error() -> None:
    secret = Option("api_key", Text(), "A key.", secret=True)
    assert secret.read("sk-live-123") == "sk-live-123"
    with pytest.raises(UsageError) as caught:
        secret.read(12345)
    assert caught.value.message == "--api-key ***: must be text, not int"


def test_flags_and_variables_come_from_the_name() -> None:
    assert option("give_up_after").flag == "--give-up-after"
    assert option("give_up_after").envvars == ("BATCHGPT_GIVE_UP_AFTER",)
    assert option("proxies").flag == "--proxy"  # one flag per proxy, repeated
    assert option("proxies").envvars == ("BATCHGPT_PROXY",)
    extra = Option("api_key", Text(), "A key.", extra_envvars=("OPENAI_API_KEY",))
    assert extra.envvars == ("BATCHGPT_API_KEY", "OPENAI_API_KEY")


def test_run_options_are_the_core_ones_then_each_backends_own() -> None:
    declared = run_options()
    assert declared[: len(OPTIONS)] == OPTIONS
    from batchgpt.providers import backend_classes

    assert declared[len(OPTIONS) :] == tuple(
        o for backend in backend_classes() for o in backend.options
    )
    names = [o.name for o in declared]
    assert len(names) == len(set(names)), "two options share a name"


# a 0 that means nothing is refused, from every source ------------------------------------------

#: Options whose 0 would mean nothing (before, 0 silently became the default), and a --format
#: no shape has (before, any name but native wrote OpenAI lines).
REFUSED = [
    ("concurrency", "0", "must be at least 1, not 0"),
    ("timeout", "0", "must be above 0, not 0"),
    ("sessions", "0", "must be at least 1, not 0"),
    ("give_up_after", "0", "must be above 0, not 0"),
    ("sync_lines", "0", "must be at least 1, not 0"),
    ("max_line_bytes", "0", "must be at least 1, not 0"),
    ("format", "xml", "must be one of native, openai, not 'xml'"),
]


def toml_value(name: str, text: str) -> str:
    declared = option(name)
    return text if int in declared.kind.toml_types else json.dumps(text)


@pytest.mark.parametrize("source", ["command line", "environment", "job file"])
@pytest.mark.parametrize(("name", "value", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_value_that_means_nothing_is_exit_2_naming_the_option(
    tmp: Path, source: str, name: str, value: str, reason: str
) -> None:
    write_prompts(tmp / "prompts.jsonl", 2)
    declared = option(name)
    args, env = [str(tmp / "prompts.jsonl")], cli_env()
    if source == "command line":
        args += [declared.flag, value]
    elif source == "environment":
        env[declared.envvars[0]] = value
    else:
        job = tmp / "job.toml"
        job.write_text(f'input = "prompts.jsonl"\n{name} = {toml_value(name, value)}\n')
        args = [str(job)]
    before = sorted(p.name for p in tmp.iterdir())

    result = batchgpt([*CLI, "run", *args, "--dry-run"], env=env)

    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert reason in result.stderr
    if source == "job file":
        assert f"{tmp / 'job.toml'}: key {name!r}" in result.stderr
    else:
        assert f"'{declared.flag}'" in result.stderr
    if source == "environment":
        assert declared.envvars[0] in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp.iterdir()) == before


@pytest.mark.parametrize(("name", "value", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_library_caller_gets_the_same_refusal(
    tmp: Path, name: str, value: str, reason: str
) -> None:
    for given in (value, int(value) if value.isdigit() else value):
        with pytest.raises(UsageError) as caught:
            RunConfig.build({"input": tmp / "prompts.jsonl", name: given})
        assert caught.value.message == f"{option(name).flag} {given!r}: {reason}"


def test_no_shape_is_written_for_a_format_that_does_not_exist() -> None:
    result = Result("q1", 1, "gpt-4o", response="yes", attempts=1)
    assert set(FORMATS) == {"native", "openai"}
    with pytest.raises(KeyError):
        encode(result, "xml")


@pytest.mark.parametrize(
    ("name", "value"),
    [("drain_timeout", 0), ("retries", 0), ("rate", 0), ("rate", "0/min")],
)
def test_a_0_that_means_something_is_kept(tmp: Path, name: str, value: Any) -> None:
    config = RunConfig.build({"input": tmp / "prompts.jsonl", name: value})
    assert getattr(config, name) == 0


# precedence -------------------------------------------------------------------------------------


def dry_run(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = batchgpt([*CLI, "run", *args, "--dry-run"], env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_command_line_beats_environment_beats_job_file_beats_default(tmp: Path) -> None:
    write_prompts(tmp / "prompts.jsonl", 2)
    job = tmp / "job.toml"
    job.write_text(
        'input = "prompts.jsonl"\n'
        "concurrency = 2\n"
        "retry_errors = true\n"
        'proxies = ["http://file-a:1", "http://file-b:2"]\n'
        'format = "openai"\n'
        "drain_timeout = 5\n"
    )
    env = cli_env(
        BATCHGPT_CONCURRENCY="3",
        BATCHGPT_RETRY_ERRORS="0",
        BATCHGPT_PROXY="http://env-a:3 http://env-b:4",
        BATCHGPT_DRAIN_TIMEOUT="0",
    )
    cli = ["--concurrency", "5", "--retry-errors", "--proxy", "http://cli:5", "--format", "native"]
    keys = ("concurrency", "retry_errors", "proxies", "format", "drain_timeout", "timeout")

    def seen(config: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(config[key] for key in keys)

    default = (4, False, [], "native", 20.0, 120.0)
    from_file = (2, True, ["http://file-a:1", "http://file-b:2"], "openai", 5.0, 120.0)
    from_env = (3, False, ["http://env-a:3", "http://env-b:4"], "openai", 0.0, 120.0)
    from_cli = (5, True, ["http://cli:5"], "native", 0.0, 120.0)
    assert seen(dry_run(str(tmp / "prompts.jsonl"))) == default
    assert seen(dry_run(str(job))) == from_file
    assert seen(dry_run(str(job), env=env)) == from_env
    assert seen(dry_run(str(job), *cli, env=env)) == from_cli
    without_file = dry_run(str(tmp / "prompts.jsonl"), env=env)
    assert seen(without_file) == (
        3,
        False,
        ["http://env-a:3", "http://env-b:4"],
        "native",
        0.0,
        120.0,
    )


# derived defaults -------------------------------------------------------------------------------


def build(tmp: Path, **values: Any) -> RunConfig:
    return RunConfig.build({"input": tmp / "prompts.jsonl", **values})


def test_every_default_is_the_declared_one(tmp: Path) -> None:
    config = build(tmp)
    for declared in OPTIONS:
        if declared.default is not None and hasattr(config, declared.name):
            default = declared.default
            expected = list(default) if isinstance(default, tuple) else default
            assert getattr(config, declared.name) == expected, declared.name


def test_output_comes_from_the_input_and_the_shard(tmp: Path) -> None:
    assert build(tmp).output == tmp / "prompts.results.jsonl"
    assert build(tmp, shard="1/3").output == tmp / "prompts.shard-1-of-3.results.jsonl"
    other = RunConfig.build({"input": tmp / "questions.txt"})
    assert other.output == tmp / "questions.txt.results.jsonl"
    assert build(tmp, output=tmp / "mine.jsonl").output == tmp / "mine.jsonl"


def test_checkpoint_and_lock_come_from_the_output(tmp: Path) -> None:
    assert build(tmp).checkpoint == tmp / "prompts.results.jsonl.ckpt"
    mine = build(tmp, output=tmp / "out" / "mine.jsonl")
    assert mine.checkpoint == tmp / "out" / "mine.jsonl.ckpt"
    assert mine.lock_path == tmp / "out" / "mine.jsonl.lock"
    assert build(tmp, checkpoint=tmp / "state.json").checkpoint == tmp / "state.json"


@pytest.mark.parametrize(("concurrency", "sessions"), [(1, 1), (3, 3), (4, 4), (16, 4)])
def test_sessions_come_from_the_concurrency(tmp: Path, concurrency: int, sessions: int) -> None:
    assert build(tmp, concurrency=concurrency).sessions == sessions
    assert build(tmp, concurrency=concurrency, sessions=7).sessions == 7


def test_base_url_and_model_come_from_the_backend(tmp: Path) -> None:
    backend = backend_class("chatgpt-es")
    config = build(tmp)
    assert (config.provider, config.base_url, config.model) == (
        "chatgpt-es",
        backend.default_base_url,
        backend.default_model,
    )
    assert (config.base_url, config.model) == ("https://chatgpt.es", "gpt-4o")
    assert config.backend_options == {o.name: o.default for o in backend.options}
    assert build(tmp, model="gpt-4").model == "gpt-4"


def test_an_unknown_model_is_refused_naming_the_known_ones(tmp: Path) -> None:
    with pytest.raises(UsageError) as caught:
        build(tmp, model="gpt-5")
    assert caught.value.message == (
        "--model 'gpt-5': unknown model 'gpt-5' (known: gpt-4, gpt-4o, gpt-4o-mini)"
    )


def test_a_proxy_file_adds_to_the_proxies(tmp: Path) -> None:
    listed = tmp / "proxies.txt"
    listed.write_text("# ours\nhttp://p1:1\n\n  http://p2:2  # the second\n")
    config = build(tmp, proxies=["http://cli:0"], proxy_file=listed)
    assert config.proxies == ["http://cli:0", "http://p1:1", "http://p2:2"]
    with pytest.raises(UsageError, match="--proxy-file"):
        build(tmp, proxy_file=tmp / "missing.txt")


def test_shard_count_takes_its_index_from_the_scheduler(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert build(tmp, shard_count=3).shard == Shard(2, 3)
    with pytest.raises(UsageError, match="not both"):
        build(tmp, shard="1/3", shard_count=3)


def test_what_build_refuses_before_any_option(tmp: Path) -> None:
    with pytest.raises(UsageError, match="no input"):
        RunConfig.build({})
    with pytest.raises(UsageError, match="unknown option 'concurency'"):
        build(tmp, concurency=4)


def test_progress_is_off_without_a_terminal(tmp: Path) -> None:
    assert build(tmp).progress is False  # pytest's stderr is no terminal
    assert build(tmp, no_progress=True).progress is False


# what a checkpoint records ----------------------------------------------------------------------


def test_result_options_are_the_stable_keys_a_checkpoint_records(tmp: Path) -> None:
    """Checkpoints on disk hold these keys and a resume compares them one by one: renaming or
    dropping one would make every existing job refuse to resume."""
    config = build(tmp, shard="1/3", format="openai", model="gpt-4", max_line_bytes=1000)
    assert config.result_options() == {
        "model": "gpt-4",
        "shard": "1/3",
        "format": "openai",
        "max_line_bytes": 1000,
    }
    assert build(tmp).result_options() == {
        "model": "gpt-4o",
        "shard": None,
        "format": "native",
        "max_line_bytes": DEFAULT_MAX_LINE_BYTES,
    }
    assert [o.name for o in OPTIONS if o.shapes_results] == list(config.result_options())
    json.dumps(config.result_options())  # plain JSON, as the checkpoint writes it
    # Options that do not shape results may change between runs of one job.
    assert build(tmp, concurrency=9, rate=2).result_options() == build(tmp).result_options()


def test_public_redacts_credentials(tmp: Path) -> None:
    config = build(
        tmp, base_url="https://user:pw@chat.example/", proxies=["http://u:secret@127.0.0.1:1"]
    )
    shown = config.public()
    assert shown["base_url"] == "https://***@chat.example/"
    assert shown["proxies"] == ["http://***@127.0.0.1:1"]
    assert "secret" not in json.dumps(shown) and "pw" not in json.dumps(shown)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--tpm", "1000"], {}, "--tpm is an option of --provider openai, not of chatgpt-es"),
        ([], {"BATCHGPT_TPM": "1000"}, "--tpm is an option of --provider openai"),
        (["--provider", "openai", "--chat", "legacy"], {}, "--chat is an option of --provider"),
        (["--provider", "openai", "--bot-id", "4"], {}, "--bot-id is an option of --provider"),
    ],
)
def test_an_option_of_another_backend_is_exit_2_not_ignored(
    tmp: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    write_prompts(tmp / "prompts.jsonl", 1)
    done = batchgpt(
        [*CLI, "run", str(tmp / "prompts.jsonl"), *args, "--dry-run"], env=cli_env(**env)
    )
    assert done.returncode == 2, done.stdout
    assert message in done.stderr


def test_a_key_in_the_environment_is_no_error_for_chatgpt_es(tmp: Path) -> None:
    """OPENAI_API_KEY may well be set for other work."""
    write_prompts(tmp / "prompts.jsonl", 1)
    done = batchgpt(
        [*CLI, "run", str(tmp / "prompts.jsonl"), "--dry-run"], env=cli_env(OPENAI_API_KEY="sk-x")
    )
    assert done.returncode == 0, done.stderr
    assert "sk-x" not in done.stdout
