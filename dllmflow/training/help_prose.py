"""Real prose from command-line help: the option lists of this machine's Python tools.

Manual-style text (an option heading, then what it does) with the questions a person asks of
it: "which pip option skips the cache?", "ruff flag to fix what it finds", "default port of
uvicorn?". The help screens come from running the tools (``--help``, no network); only Python
tools and the stack's own servers are asked, never the system's coreutils/GNU tools, whose
manual pages are the prose evaluation set.

``help_documents`` turns the screens into excerpts of about ``EXCERPT_CHARS`` characters;
``help_questions`` writes questions whose answer (a flag or a default value) stands in one
excerpt. The oracle then runs over a search of many excerpts (``agent_data``).
"""

from __future__ import annotations

import ast
import os
import random
import re
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .english import base_form, lower_first, third_person

EXCERPT_CHARS = 900
_BIN = Path(sys.executable).parent

# Python modules with a CLI (`python -m NAME --help`), and console scripts of the environment
# with their subcommands (`NAME [SUB] --help`). gzip/tarfile are left out: their GNU
# namesakes are evaluation topics.
_MODULES = (
    "http.server", "json.tool", "zipfile", "timeit", "unittest", "pydoc", "venv", "compileall",
    "py_compile", "trace", "cProfile", "pdb", "ast", "tokenize", "dis", "calendar", "uuid",
    "base64", "sqlite3", "pickletools", "webbrowser", "ensurepip", "zipapp", "filecmp",
    "tabnanny", "mimetypes", "platform", "doctest", "inspect", "site", "pickle", "random",
)  # fmt: skip
_SCRIPTS = (
    "pip install", "pip download", "pip uninstall", "pip list", "pip show", "pip freeze",
    "pip wheel", "pip cache", "pip config", "pip", "ruff check", "ruff format", "ruff", "pytest",
    "uvicorn", "alembic", "alembic upgrade", "alembic revision", "ray start", "ray stop",
    "ray status", "hf download", "hf upload", "accelerate launch", "torchrun", "virtualenv",
    "pygmentize", "tqdm", "py-spy record", "py-spy dump", "py-spy top", "jsonschema",
    "markdown-it", "watchfiles", "normalizer", "f2py", "redis-server", "redis-cli",
    "temporal server start-dev", "temporal workflow list", "temporal workflow show",
    "temporal workflow terminate", "isympy", "gguf-dump", "transformers", "fastapi run",
    "fastapi dev", "dotenv", "httpx", "websockets", "pyftsubset", "ttx", "fonttools", "hypothesis",
    "mako-render", "tune", "serve",
)  # fmt: skip
_BANNED_NAMES = ("dllmflow",)


@dataclass(frozen=True)
class HelpOption:
    prog: str
    section: str
    heading: str  # as printed: "-b ADDRESS, --bind ADDRESS"
    flags: tuple[str, ...]  # ("-b", "--bind")
    description: str  # whitespace-normalized


def help_commands() -> list[tuple[str, list[str]]]:
    cmds = [(m, [sys.executable, "-m", m, "--help"]) for m in _MODULES]
    for name in _SCRIPTS:
        exe, *sub = name.split()
        path = _BIN / exe
        if path.exists() and exe not in _BANNED_NAMES:
            cmds.append((name, [str(path), *sub, "--help"]))
    return cmds


def collect_help(timeout: float = 20.0) -> list[tuple[str, str]]:
    """(program, help screen) for every command that prints one; failures are skipped."""
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb", "PAGER": "cat"}
    env["_TYPER_FORCE_DISABLE_TERMINAL"] = "1"
    out = []
    for prog, argv in help_commands():
        try:
            run = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        text = run.stdout if run.stdout.count("\n") >= run.stderr.count("\n") else run.stderr
        if text.count("\n-") + text.count("\n  -") >= 2:
            out.append((prog, text))
    return out


# ---------------------------------------------------------------------------------------------
# Help screens rebuilt from source: the argparse / click options declared in this environment's
# Python files (hundreds of programs, against the few dozen installed commands)

_SOURCE_BANNED = ("/dllmflow/", "/tests/", "/test/", "/idle_test/", "bench/evalsets")
_SOURCE_NAMESAKES = {"gzip", "tarfile"}  # stdlib CLIs named like the evaluation's GNU tools
_NO_VALUE = {"store_true", "store_false", "store_const", "count", "help", "version"}


def _const(node: ast.AST | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def _option_call(call: ast.Call) -> tuple[list[str], dict[str, Any]] | None:
    """(flags, constant keyword values) of an ``add_argument(...)`` / ``click.option(...)``
    call whose flags and help are literal strings; None for anything else."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("add_argument", "option"):
        return None
    flags = [_const(a) for a in call.args]
    if not flags or not all(isinstance(f, str) and _FLAG.fullmatch(f) for f in flags):
        return None  # positional arguments, "--x/--no-x" click switches, computed flags
    kw = {k.arg: _const(k.value) for k in call.keywords if k.arg}
    kw["_kind"] = name
    if not isinstance(kw.get("help"), str) or "SUPPRESS" in kw["help"]:
        return None
    return flags, kw


def _render_option(flags: list[str], kw: dict[str, Any], prog: str) -> tuple[str, str] | None:
    takes_value = (
        kw.get("action") not in _NO_VALUE and not kw.get("is_flag") and not kw.get("count")
    )
    if kw["_kind"] == "option" and isinstance(kw.get("default"), bool):
        takes_value = bool(kw.get("is_flag") is False)  # click infers a flag from a bool default
    metavar = kw.get("metavar")
    if takes_value and not isinstance(metavar, str):
        metavar = max(flags, key=len).lstrip("-").replace("-", "_").upper()
    heading = ", ".join(f"{f} {metavar}" if takes_value else f for f in flags)
    default = kw.get("default")
    shown = None if default is None or isinstance(default, bool) else str(default)
    text = kw["help"].replace("%(prog)s", prog).replace("%%", "%")
    if "%(default)" in text:
        if shown is None:
            return None
        text = re.sub(r"%\(default\)[rs]", shown, text)
    if "%(" in text:
        return None
    text = " ".join(text.split())
    if shown and takes_value and "default" not in text.lower() and len(shown) <= 24:
        text += f" (default: {shown})"  # as argparse's ArgumentDefaultsHelpFormatter shows it
    return (heading, text) if len(text) >= 8 else None


def _screens_in_file(path: Path, module: str) -> list[tuple[str, str]]:
    try:
        source = path.read_text(encoding="utf-8")
        if "add_argument(" not in source and "option(" not in source:
            return []
        tree = ast.parse(source)
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    groups: dict[str, list[tuple[str, str]]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # click: the options decorate the command's function: "pkg command-name".
            prog = f"{module.split('.')[0]} {node.name.strip('_').replace('_', '-')}"
            calls = [d for d in node.decorator_list if isinstance(d, ast.Call)]
        elif isinstance(node, ast.Module):
            prog = f"python -m {module}"
            calls = [c for c in ast.walk(node) if isinstance(c, ast.Call)]
        else:
            continue
        for call in calls:
            found = _option_call(call)
            if found is None or (found[1]["_kind"] == "option") != (prog[0] != "p"):
                continue  # click options belong to their function, argparse to the module
            rendered = _render_option(*found, prog)
            if rendered:
                groups.setdefault(prog, []).append(rendered)
    screens = []
    for prog, options in groups.items():
        options = list(dict.fromkeys(options))
        if len(options) >= 2:
            body = "\n".join(f"  {heading}\n        {text}" for heading, text in options)
            screens.append((prog, f"usage: {prog} [options]\n\noptions:\n{body}\n"))
    return screens


def source_screens(roots: Sequence[Path] | None = None) -> list[tuple[str, str]]:
    """(program, help screen) rebuilt from the literal argparse ``add_argument`` and click
    ``option`` calls in the Python files under ``roots`` (default: the stdlib and
    site-packages), laid out as argparse prints them so ``parse_options`` reads them."""
    if roots is None:
        paths = sysconfig.get_paths()
        roots = [Path(p) for p in dict.fromkeys((paths["stdlib"], paths["purelib"]))]
    out = []
    for root in roots:
        for path in sorted(Path(root).rglob("*.py")):
            rel = path.relative_to(root)
            if any(b in f"/{path}" for b in _SOURCE_BANNED) or rel.parts[0] == "site-packages":
                continue
            parts = [*rel.parts[:-1]] + ([path.stem] if path.stem != "__init__" else [])
            banned = any(p in _BANNED_NAMES for p in parts)
            if not parts or parts[-1] in _SOURCE_NAMESAKES or banned:
                continue
            out.extend(_screens_in_file(path, ".".join(parts)))
    return out


_BOX = str.maketrans({c: " " for c in "│╭╮╰╯─┃━┏┓┗┛"})
_FLAG = re.compile(r"-{1,2}[A-Za-z0-9?][\w.-]*")
_OPTION_LINE = re.compile(r"^( {1,12})(-{1,2}[A-Za-z0-9?].*)$")
_SECTION = re.compile(r"^\s{0,2}([A-Za-z][\w ,/()-]{1,40}):\s*$|^ ([A-Z][\w ]{1,40}) {2,}$")


def _split_heading(rest: str) -> tuple[str, str]:
    """Option text -> (heading, same-line description); they are split at 2+ spaces."""
    m = re.search(r"\s{2,}", rest)
    if m is None:
        return rest.strip(), ""
    return rest[: m.start()].strip(), rest[m.end() :].strip()


def parse_options(prog: str, text: str) -> list[HelpOption]:
    """The options of one help screen (argparse, click/typer, Go cobra and getopt styles)."""
    lines = [ln.translate(_BOX).rstrip() for ln in text.splitlines()]
    out: list[HelpOption] = []
    section = "options"
    cur: dict[str, Any] | None = None

    def close() -> None:
        nonlocal cur
        if cur is not None:
            desc = " ".join(" ".join(cur["desc"]).split())
            flags = tuple(dict.fromkeys(_FLAG.findall(cur["heading"])))
            if desc and flags and len(desc) >= 8:
                out.append(HelpOption(prog, section, cur["heading"], flags, desc))
        cur = None

    for line in lines:
        if not line.strip():
            close()
            continue
        sec = _SECTION.match(line)
        if sec and not line.lstrip().startswith("-"):
            close()
            section = (sec.group(1) or sec.group(2)).strip().lower()
            continue
        m = _OPTION_LINE.match(line)
        if m:
            close()
            heading, desc = _split_heading(m.group(2))
            cur = {"indent": len(m.group(1)), "heading": heading, "desc": [desc] if desc else []}
            continue
        indent = len(line) - len(line.lstrip())
        if cur is not None and indent > cur["indent"]:
            cur["desc"].append(line.strip())
        else:
            close()
    close()
    return out


def help_documents(screens: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Excerpts of the option lists: {"title", "text", "_options"} (ids are given later).

    Text follows the manual layout of the evaluation's man pages: each option's heading on
    its own line, its description on the next.
    """
    docs: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()  # pip's general options are on every subcommand
    for prog, text in screens:
        opts = []
        for o in parse_options(prog, text):
            if (o.heading, o.description) not in seen:
                seen.add((o.heading, o.description))
                opts.append(o)
        by_section: dict[str, list[HelpOption]] = {}
        for o in opts:
            by_section.setdefault(o.section, []).append(o)
        for section, group in by_section.items():
            chunk: list[HelpOption] = []
            size = 0
            parts = []
            for o in group:
                entry = len(o.heading) + len(o.description) + 2
                if chunk and size + entry > EXCERPT_CHARS:
                    parts.append(chunk)
                    chunk, size = [], 0
                chunk.append(o)
                size += entry
            if chunk:
                parts.append(chunk)
            for part in parts:
                first, last = part[0].flags[-1], part[-1].flags[-1]
                title = f"{prog}: {section}" + (f" ({first} to {last})" if len(parts) > 1 else "")
                body = "\n".join(f"{o.heading}\n{o.description}" for o in part)
                docs.append({"title": title, "text": f"{prog} {section}\n{body}", "_options": part})
    return docs


# ---------------------------------------------------------------------------------------------
# Questions

_IMPERATIVE = {
    "show", "print", "display", "enable", "disable", "use", "set", "run", "do", "don't", "turn",
    "include", "exclude", "ignore", "skip", "write", "read", "add", "remove", "keep", "stop",
    "force", "allow", "list", "output", "specify", "select", "install", "upgrade", "compile",
    "check", "fix", "format", "bind", "serve", "increase", "decrease", "suppress", "treat",
    "make", "create", "load", "save", "report", "give", "start", "override", "emit",
    "generate", "limit", "change", "exit", "only", "avoid", "prefer", "require", "watch",
    "reload", "connect", "send", "wait", "return", "search", "sort", "resolve", "delete",
    "open", "apply", "collect", "log", "record", "dump", "profile", "trace", "follow",
    "fail", "raise", "disallow", "respect", "build", "download", "upload", "stream",
}  # fmt: skip
_FLAG_Q = [
    "which {p} option {vp}?", "{p} flag to {inf}", "how do I {inf} with {p}?",
    "how can i get {p} to {inf}", "what option tells {p} to {inf}?",
    "I want {p} to {inf} - which flag?", "{p}: how to {inf}?", "Is there a {p} flag to {inf}?",
    "which flag makes {p} {inf}", "{p} cli: option to {inf}?",
]  # fmt: skip
_NOUN_Q = [
    "which {p} option is for {np}?", "{p} option for {np}", "what flag of {p} controls {np}?",
    "{p}: which argument sets {np}?", "how do i set {np} in {p}?",
]  # fmt: skip
_DEFAULT_Q = [
    "what's the default of {f} in {p}?", "{p} {f} default value", "default for {p}'s {f}?",
    "if I don't pass {f}, what does {p} use?", "{p}: what is {f} set to by default",
]  # fmt: skip
_HELP_DEFAULT = re.compile(
    r"\((?:default|Default|DEFAULT)(?: is|:)?\s*[`'\"]?(\w[^()`'\"]{0,30}?)[`'\"]?\)"
    r"|\[default:\s*([^\]]{1,30})\]"
)


def _clean_description(desc: str) -> str | None:
    """The first sentence, without defaults and trailing dots; None if not a usable phrase."""
    first = re.split(r"(?<=[a-z0-9)])\.\s", desc, maxsplit=1)[0]
    first = _HELP_DEFAULT.sub("", first).strip().rstrip(".;:,").strip()
    words = first.split()
    if not 2 <= len(words) <= 18 or "help message" in first or "=" in first:
        return None
    return first


def _option_question(o: HelpOption, rng: random.Random) -> dict[str, Any] | None:
    desc = _clean_description(o.description)
    if desc is None:
        return None
    words = desc.split()
    head = words[0].lower()
    base = base_form(head) if head.endswith("s") and not head.endswith("ss") else head
    short = [f for f in o.flags if not f.startswith("--")]
    long = [f for f in o.flags if f.startswith("--")]
    answer = (short or long)[0]
    aliases = [f for f in o.flags if f != answer]
    if base in _IMPERATIVE:
        rest = " ".join(words[1:])
        vp, inf = f"{third_person(base)} {rest}", f"{base} {rest}"
        template = rng.choice(_FLAG_Q)
        q = template.replace("{vp}", vp).replace("{inf}", inf)
    else:
        q = rng.choice(_NOUN_Q).replace("{np}", lower_first(desc))
    return {"question": q, "answer": answer, "aliases": aliases, "kind": "flag"}


def _default_question(o: HelpOption, rng: random.Random) -> dict[str, Any] | None:
    m = _HELP_DEFAULT.search(o.description)
    if m is None:
        return None
    value = (m.group(1) or m.group(2)).strip().strip("'\"` ")
    if not value or len(value) > 24 or value.lower() in ("none", "null", "false", "true", ""):
        return None
    flag = ([f for f in o.flags if f.startswith("--")] or list(o.flags))[0]
    q = rng.choice(_DEFAULT_Q)
    return {"question": q, "answer": value, "aliases": [], "kind": "default", "flag": flag}


def help_questions(
    docs: Sequence[dict[str, Any]], rng: random.Random, per_doc: int = 2
) -> list[dict[str, Any]]:
    """Up to ``per_doc`` question records per excerpt: {"question" (with ``{p}`` for the
    program, filled by the caller's noise step), "answer", "aliases", "kind", "doc_index"}."""
    out = []
    for i, doc in enumerate(docs):
        opts = list(doc["_options"])
        rng.shuffle(opts)
        made = 0
        for o in opts:
            if made >= per_doc:
                break
            rec = _default_question(o, rng) if rng.random() < 0.3 else None
            rec = rec or _option_question(o, rng)
            # The answer must stand in this excerpt as a whole token (for the quote).
            if rec is None or not re.search(
                r"(?<![\w-])" + re.escape(rec["answer"]) + r"(?![\w-])", doc["text"]
            ):
                continue
            out.append({**rec, "prog": o.prog, "doc_index": i})
            made += 1
    return out
