"""Hide secrets in command lines before they leave the host.

GPU jobs are often started with credentials on the command line (``--hf-token``,
``OPENAI_API_KEY=…``, ``postgres://user:pass@db``). The monitor shows every process's
command to whoever can open the dashboard, so anything that looks like a secret is replaced
by ``***`` here, once, before it reaches a snapshot. Over-hiding a harmless value is the
accepted cost; leaking a token is not.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from itertools import pairwise

MASK = "***"

# Words that, as the last part of a flag name (``--db-password``, ``--hf_token``), mark the
# flag's value as a secret. "tokens" (``--max-new-tokens``) deliberately is not one.
_FLAG_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "pass",
        "token",
        "secret",
        "apikey",
        "auth",
        "credentials",
        "credential",
        "creds",
    }
)
# Two-part names (``--api-key``, ``--aws-secret-access-key``) that mark a secret.
_PAIR_WORDS = frozenset(
    {
        "api_key",
        "access_key",
        "secret_key",
        "private_key",
        "auth_key",
        "client_secret",
        "access_token",
        "auth_token",
        "session_key",
    }
)
# Glued spellings (``PGPASSWORD``, ``--hftoken``) caught by their ending.
_SUFFIXES = ("password", "passwd", "token", "secret", "apikey", "accesskey", "privatekey")
# Words that anywhere in an env-style key (``AWS_SECRET_ACCESS_KEY_ID=…``) mark its value.
_KEY_WORDS = frozenset(_FLAG_WORDS - {"pass", "auth"})

_SEPARATORS = re.compile(r"[-_.]+")
_SAFE = re.compile(r"[\w@%+=:,./*~^-]+", re.ASCII)

# The KEY of KEY=value, where KEY is not a flag (no dash right before it).
_ENV_KEY = re.compile(r"(?<![\w.-])([A-Za-z_][\w.-]*)=")
# A value in free text: a quoted string or one word.
_TEXT_VALUE = re.compile(r"\"[^\"]*\"|'[^']*'|\S*")
# A flag and its value in free text: ``--password=x``, ``--password x``, ``--password "a b"``.
_FLAG_TEXT = re.compile(r"(?<!\S)(--?[A-Za-z][\w.-]*)(=|\s+)(?!-)(\"[^\"]*\"|'[^']*'|\S+)")
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*):([^\s/]+)@")
_AUTH_HEADER = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|private-token|x-auth-token)"
    r"(\s*[:=]\s*)(?:(bearer|basic|token|digest)\s+)?(\"[^\"]*\"|'[^']*'|[^\s\"']+)"
)
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)([A-Za-z0-9._~+/=-]{8,})")
_TOKEN_SHAPES = re.compile(
    r"\b(?:"
    r"gh[pousr]_[A-Za-z0-9]{20,}"  # GitHub classic tokens
    r"|github_pat_[A-Za-z0-9_]{20,}"  # GitHub fine-grained tokens
    r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
    r"|hf_[A-Za-z0-9]{20,}"  # Hugging Face
    r"|sk-[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic (sk-ant-…), DeepSeek …
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key ids
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API keys
    r")"
)


def _is_secret_name(name: str, *, anywhere: bool) -> bool:
    """Whether a flag name or env key names a secret.

    Flags look at their last word(s) (``--token-file`` is a path, not a token); env keys
    look at every word, as the convention there is ``<WHAT>_<SECRET-WORD>[_<QUALIFIER>]``.
    """
    lowered = name.lower()
    parts = [part for part in _SEPARATORS.split(lowered) if part]
    if not parts:
        return False
    if anywhere:
        if any(part in _KEY_WORDS for part in parts) and lowered != "pwd":
            return True
        pairs = (f"{a}_{b}" for a, b in pairwise(parts))
        if any(pair in _PAIR_WORDS for pair in pairs):
            return True
    else:
        if parts[-1] in _FLAG_WORDS:
            return True
        if len(parts) > 1 and f"{parts[-2]}_{parts[-1]}" in _PAIR_WORDS:
            return True
    return parts[-1].endswith(_SUFFIXES)


def is_secret_flag(flag: str) -> bool:
    """``--api-key``, ``-password``, ``--HF_TOKEN`` … (leading dashes optional)."""
    return _is_secret_name(flag.lstrip("-"), anywhere=False)


def _mask_env(text: str, *, to_end: bool) -> str:
    """Mask the value of every ``KEY=value`` whose key names a secret.

    Within one argument the value runs to its end (a password may hold spaces or commas);
    in free text it is one word or a quoted string. Keys that are not secret are stepped
    over without swallowing their value, so ``a=b,HF_TOKEN=c`` still hides ``c``.
    """
    pieces: list[str] = []
    pos = 0
    for match in _ENV_KEY.finditer(text):
        if match.start() < pos or not _is_secret_name(match.group(1), anywhere=True):
            continue
        pieces.append(text[pos : match.end()])
        pieces.append(MASK)
        if to_end:
            return "".join(pieces)
        value = _TEXT_VALUE.match(text, match.end())
        pos = value.end() if value else match.end()
    if not pieces:
        return text
    pieces.append(text[pos:])
    return "".join(pieces)


def _auth_header(match: re.Match[str]) -> str:
    scheme = f"{match.group(3)} " if match.group(3) else ""
    return f"{match.group(1)}{match.group(2)}{scheme}{MASK}"


def _patterns(text: str, *, to_end: bool) -> str:
    """Secrets recognisable by their shape, wherever they sit in the text."""
    if "://" in text:
        text = _URL_CREDENTIALS.sub(rf"\1:{MASK}@", text)
    if "=" in text:
        text = _mask_env(text, to_end=to_end)
    text = _AUTH_HEADER.sub(_auth_header, text)
    text = _BEARER.sub(rf"\1\2{MASK}", text)
    return _TOKEN_SHAPES.sub(MASK, text)


def quote(arg: str) -> str:
    """Quote like :func:`shlex.quote`, but leave ``***`` and other plain words bare."""
    if _SAFE.fullmatch(arg):
        return arg
    return shlex.quote(arg)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """The arguments with every secret replaced by ``***`` (same length as ``argv``)."""
    out: list[str] = []
    value_is_secret = False
    for arg in argv:
        if value_is_secret:
            value_is_secret = False
            if not arg.startswith("-") or arg == "-":
                out.append(MASK)
                continue
        if arg.startswith("-") and len(arg) > 1:
            name, sep, _value = arg.partition("=")
            if is_secret_flag(name):
                if sep:
                    out.append(f"{name}={MASK}")
                else:
                    out.append(arg)
                    value_is_secret = True
                continue
        elif arg.lower() in ("bearer", "basic"):
            value_is_secret = True
        out.append(_patterns(arg, to_end=True))
    return out


def redact_command(argv: Sequence[str]) -> str:
    """One display line for a process's argv, secrets replaced by ``***``."""
    return " ".join(quote(arg) for arg in redact_argv(argv))


def _flag_text(match: re.Match[str]) -> str:
    if not is_secret_flag(match.group(1)):
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{MASK}"


def redact_text(cmdline: str) -> str:
    """Same as :func:`redact_command` for a command line already joined into one string.

    Used where only text is available (a Windows command line, a replayed capture).
    """
    text = _FLAG_TEXT.sub(_flag_text, cmdline) if "-" in cmdline else cmdline
    return _patterns(text, to_end=False)
