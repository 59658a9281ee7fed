"""Secrets on command lines never reach a snapshot; harmless arguments stay readable."""

from __future__ import annotations

import shlex

from hypothesis import assume, given
from hypothesis import strategies as st

from monitoring.telemetry.redact import is_secret_flag, redact_command, redact_text

SECRET_FLAGS = (
    "password",
    "passwd",
    "pwd",
    "token",
    "secret",
    "api-key",
    "apikey",
    "access-key",
    "auth",
    "credentials",
    "private-key",
    "hf-token",
    "db-password",
    "client-secret",
    "aws-secret-access-key",
    "openai-api-key",
)


def test_it_hides_the_value_after_a_secret_flag() -> None:
    line = redact_command(["python", "serve.py", "--token", "abc123", "--port", "8000"])
    assert line == "python serve.py --token *** --port 8000"


def test_it_hides_the_value_of_a_secret_flag_written_with_equals() -> None:
    assert redact_command(["app", "--API_KEY=abc123"]) == "app --API_KEY=***"
    assert redact_command(["app", "-password=hunter2"]) == "app -password=***"


def test_it_keeps_flags_that_only_look_like_secrets() -> None:
    argv = ["vllm", "serve", "--max-new-tokens", "512", "--tokenizer", "meta/llama", "-p", "80"]
    assert redact_command(argv) == shlex.join(argv)


def test_it_does_not_take_the_next_flag_as_a_secret_value() -> None:
    assert redact_command(["app", "--auth", "--port", "80"]) == "app --auth --port 80"


def test_it_hides_env_style_secrets() -> None:
    argv = ["env", "HF_TOKEN=hf_x", "PGPASSWORD=pw", "AWS_SECRET_ACCESS_KEY=k", "PWD=/srv"]
    assert (
        redact_command(argv) == "env HF_TOKEN=*** PGPASSWORD=*** AWS_SECRET_ACCESS_KEY=*** PWD=/srv"
    )


def test_it_hides_env_secrets_passed_through_another_flag() -> None:
    # docker run -e / --env=KEY=value, and several pairs packed into one argument.
    assert redact_command(["docker", "run", "-e", "OPENAI_API_KEY=sk1"]).endswith(
        "OPENAI_API_KEY=***"
    )
    assert redact_command(["x", "--env=HF_TOKEN=abc"]) == "x --env=HF_TOKEN=***"
    assert redact_command(["x", "a=b,GITHUB_TOKEN=c d"]) == "x a=b,GITHUB_TOKEN=***"


def test_it_keeps_user_and_host_of_a_url_with_credentials() -> None:
    line = redact_command(["psql", "postgres://bob:s3cr@t@db.internal:5432/app"])
    assert line == "psql postgres://bob:***@db.internal:5432/app"


def test_it_hides_bearer_tokens_in_headers() -> None:
    line = redact_command(["curl", "-H", "Authorization: Bearer eyJhbGciOi.abc", "http://x"])
    assert line == "curl -H 'Authorization: Bearer ***' http://x"
    assert redact_command(["tool", "Bearer", "eyJhbGciOi"]) == "tool Bearer ***"


def test_it_hides_well_known_token_shapes_anywhere() -> None:
    tokens = [
        "ghp_" + "a1B2" * 9,
        "github_pat_" + "11ABCDE_" * 4,
        "hf_" + "AbCd" * 9,
        "sk-proj-" + "Xy9_" * 8,
        "AKIAIOSFODNN7EXAMPLE",
        "xoxb-1234567890-abcdefghij",
    ]
    for token in tokens:
        line = redact_command(["git", f"https://x.invalid/{token}/", f"--header={token}"])
        assert token not in line, token


def test_it_quotes_only_where_needed() -> None:
    assert redact_command(["a b", "", "plain", "--x=1"]) == "'a b' '' plain --x=1"


def test_it_redacts_a_joined_command_line() -> None:
    text = 'serve --token abc --model m --password="a b" host=db password=zz https://u:pw@h/x'
    assert redact_text(text) == (
        "serve --token *** --model m --password=*** host=db password=*** https://u:***@h/x"
    )


def test_it_recognises_secret_flags_in_any_spelling() -> None:
    for name in SECRET_FLAGS:
        for spelling in (name, name.upper(), name.replace("-", "_")):
            assert is_secret_flag(f"--{spelling}"), spelling
    for harmless in ("--tokens", "--token-file", "--port", "-p", "--user", "--model"):
        assert not is_secret_flag(harmless), harmless


_flag_names = st.sampled_from(SECRET_FLAGS).flatmap(
    lambda name: st.sampled_from(
        [f"--{name}", f"-{name}", f"--{name.upper()}", f"--{name.replace('-', '_')}"]
    )
)
_values = st.text(min_size=4, max_size=40).filter(lambda v: not v.startswith("-"))
_others = st.lists(st.text(max_size=20), max_size=6)


@given(argv=st.lists(st.text(), max_size=10))
def test_it_never_raises_on_any_argv(argv: list[str]) -> None:
    assert isinstance(redact_command(argv), str)
    assert isinstance(redact_text(" ".join(argv)), str)


@given(before=_others, flag=_flag_names, value=_values, after=_others, equals=st.booleans())
def test_a_secret_flag_value_never_appears_in_the_output(
    before: list[str], flag: str, value: str, after: list[str], equals: bool
) -> None:
    rest = ["prog", *before, flag, "***", *after]
    # The value must not be findable in what is left around it (it could be "prog").
    assume(value not in " ".join(rest) and value not in shlex.join(rest))
    argv = ["prog", *before, *([f"{flag}={value}"] if equals else [flag, value]), *after]
    assert value not in redact_command(argv)


@given(
    key=st.sampled_from(["HF_TOKEN", "DB_PASSWORD", "OPENAI_API_KEY", "MY_SECRET"]),
    value=st.text(min_size=4),
)
def test_an_env_secret_value_never_appears_in_the_output(key: str, value: str) -> None:
    assume(value not in f"prog {key}=***")
    assert value not in redact_command(["prog", f"{key}={value}"])
