"""Rebuild bench/evalsets/prose/corpus.jsonl from text installed on the build machine.

    python bench/evalsets/prose/build_corpus.py [--out bench/evalsets/prose/corpus.jsonl]

Sources: manual pages rendered with ``MANWIDTH=80 man --nj --nh -P cat PAGE | col -bx``,
/usr/share/common-licenses, /usr/share/doc/*/README*, NEWS and FAQ files (plain or gzip). Each
document is one contiguous excerpt, from the first line matching ``start`` up to (not including)
the next line matching ``end``. Wrapped lines are re-joined, indentation and runs of spaces are
dropped, table rows and option headings keep their own lines. The output depends on the
installed versions of these pages, so the committed corpus.jsonl is the reference; this script
documents how it was made and fails loudly when a page or an anchor is missing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

# (id, source, title, url fragment, start regex, end regex)
# source: "man:PAGE" or an absolute file path (".gz" is read through gzip).
SPECS: list[tuple[str, str, str, str, str, str]] = [
    ("x001", "man:grep", "grep: matching control options", "matching-control",
     r"^   Matching Control", r"^   General Output Control"),
    ("x002", "man:grep", "grep: context line control", "context-line-control",
     r"^   Context Line Control", r"^   File and Directory Selection"),
    ("x003", "man:grep", "grep: basic vs extended regular expressions; exit status",
     "exit-status", r"^   Basic vs Extended Regular Expressions", r"^ENVIRONMENT"),
    ("x004", "man:tar", "tar: compression options", "compression-options",
     r"^   Compression options", r"^   Local file selection"),
    ("x005", "man:tar", "tar: return value (exit codes)", "return-value",
     r"^RETURN VALUE", r"^SEE ALSO"),
    ("x006", "man:kill", "kill: send a signal to a process", "description",
     r"^DESCRIPTION", r"^       -q, --queue"),
    ("x007", "man:ls", "ls: sorting and one-per-line options", "sorting",
     r"^       -r, --reverse", r"^       -T, --tabsize"),
    ("x008", "man:ls", "ls: exit status", "exit-status",
     r"^       The WHEN argument defaults", r"^AUTHOR"),
    ("x009", "man:sed", "sed: command line options", "options",
     r"^       -n, --quiet", r"^       --posix"),
    ("x010", "man:gzip", "gzip: -c, -d, -f and -k options", "options",
     r"^       -c --stdout", r"^       -l --list"),
    ("x011", "man:gzip", "gzip: compression level and suffix options", "compression-level",
     r"^       -S \.suf", r"^       --rsyncable"),
    ("x012", "man:ssh", "ssh: -i identity file and -J jump host", "identity-file",
     r"^     -i identity_file", r"^     -K "),
    ("x013", "man:ssh", "ssh: -L local port forwarding and -l login name", "local-forwarding",
     r"^     -L \[bind_address:\]port:host:hostport", r"^     -M "),
    ("x014", "man:ssh", "ssh: system-wide files and exit status", "exit-status",
     r"^     /etc/ssh/ssh_known_hosts$", r"^SEE ALSO"),
    ("x015", "man:curl", "curl: -L, --location (follow redirects)", "location",
     r"^       -L, --location", r"^       --login-options"),
    ("x016", "man:curl", "curl: --max-redirs and -m, --max-time", "max-redirs",
     r"^       --max-redirs <num>", r"^       --metalink"),
    ("x017", "man:xargs", "xargs: -0, --null and -a, --arg-file", "null",
     r"^       -0, --null", r"^       --delimiter=delim"),
    ("x018", "man:xargs", "xargs: -n max-args and -P max-procs", "max-procs",
     r"^       -n max-args", r"^       -o, --open-tty"),
    ("x019", "man:xargs", "xargs: exit status", "exit-status",
     r"^EXIT STATUS", r"^STANDARDS CONFORMANCE"),
    ("x020", "man:find", "find: -mmin, -mtime and -name tests", "mtime",
     r"^       -mmin n", r"^       -newer reference"),
    ("x021", "man:timeout", "timeout: run a command with a time limit", "description",
     r"^DESCRIPTION", r"^AUTHOR"),
    ("x022", "man:nice", "nice: run a program with modified scheduling priority", "description",
     r"^DESCRIPTION", r"^AUTHOR"),
    ("x023", "man:nohup", "nohup: run a command immune to hangups", "description",
     r"^DESCRIPTION", r"^AUTHOR"),
    ("x024", "man:watch", "watch: execute a program periodically", "description",
     r"^DESCRIPTION", r"^       -p, --precise"),
    ("x025", "man:tee", "tee: copy standard input to files", "description",
     r"^DESCRIPTION", r"^AUTHOR"),
    ("x026", "man:tail", "tail: output the last part of files", "description",
     r"^DESCRIPTION", r"^       --pid=PID"),
    ("x027", "man:head", "head: output the first part of files", "description",
     r"^DESCRIPTION", r"^       NUM may have"),
    ("x028", "man:wc", "wc: print newline, word, and byte counts", "description",
     r"^DESCRIPTION", r"^AUTHOR"),
    ("x029", "man:sort", "sort: ordering options", "ordering-options",
     r"^       -b, --ignore-leading-blanks", r"^       Other options:"),
    ("x030", "man:sort", "sort: keys, output file, field separator, unique", "other-options",
     r"^       -k, --key=KEYDEF", r"^       -z, --zero-terminated"),
    ("x031", "man:cut", "cut: remove sections from each line of files", "description",
     r"^DESCRIPTION", r"^       --help"),
    ("x032", "man:uniq", "uniq: report or omit repeated lines", "description",
     r"^DESCRIPTION", r"^       -z, --zero-terminated"),
    ("x033", "man:diff", "diff: output format options", "options",
     r"^DESCRIPTION", r"^       --left-column"),
    ("x034", "man:make", "make: -C, -j, -k and -n options", "options",
     r"^       -j \[jobs\]", r"^       -o file"),
    ("x035", "man:wget", "wget: download options --bind-address to -t, --tries", "tries",
     r"^   Download Options", r"^       -O file"),
    ("x065", "man:wget", "wget: -c, --continue", "continue",
     r"^       -c$", r"^           Beginning with Wget 1\.7"),
    ("x036", "man:xz", "xz: compression preset levels", "presets",
     r"^       -0 \.\.\. -9", r"^              -7 \.\.\. -9"),
    ("x037", "man:tmux", "tmux: default key bindings", "default-key-bindings",
     r"^DEFAULT KEY BINDINGS", r"^           ,  "),
    ("x038", "man:journalctl", "journalctl: -u, --unit", "unit",
     r"^       -u, --unit=", r"^       --user-unit="),
    ("x039", "man:journalctl", "journalctl: -f, --follow, --no-tail, -q", "follow",
     r"^       -f, --follow", r"^PAGER CONTROL OPTIONS"),
    ("x040", "man:git-commit", "git commit: --amend", "amend",
     r"^       --amend", r"^       --no-post-rewrite"),
    ("x041", "man:git-commit", "git commit: -m, --message and -t, --template", "message",
     r"^       -m <msg>, --message=<msg>", r"^       -s, --signoff"),
    ("x042", "man:git-log", "git log: --oneline and --pretty", "oneline",
     r"^       --pretty\[=<format>\], --format=<format>", r"^       --encoding=<encoding>"),
    ("x043", "man:git-stash", "git stash: description", "description",
     r"^DESCRIPTION", r"^COMMANDS"),
    ("x044", "man:chmod", "chmod: numeric (octal) modes", "numeric-modes",
     r"^       A numeric mode is", r"^       chmod never changes"),
    ("x045", "man:mkdir", "mkdir: make directories", "description",
     r"^DESCRIPTION", r"^       -Z "),
    ("x046", "man:rm", "rm: removing files whose names start with a dash", "dash",
     r"^       By default, rm does not remove directories", r"^AUTHOR"),
    ("x047", "man:ln", "ln: make links between files", "description",
     r"^DESCRIPTION", r"^       --backup"),
    ("x048", "man:du", "du: depth, human-readable and summarize options", "options",
     r"^       -d, --max-depth=N", r"^       -t, --threshold"),
    ("x049", "man:date", "date: format sequences %F to %s", "format",
     r"^       %F     full date", r"^       %S     second"),
    ("x050", "man:env", "env: run a program in a modified environment", "description",
     r"^DESCRIPTION", r"^       --block-signal"),
    ("x051", "man:jq", "jq: --sort-keys, --raw-output, --join-output, --exit-status",
     "raw-output", r"^       ○   --sort-keys / -S:", r"^       ○   --arg name value:"),
    ("x052", "man:ss", "ss: -n, -r, -a and -l options", "options",
     r"^       -n, --numeric", r"^       -o, --options"),
    ("x053", "man:systemctl", "systemctl: enable", "enable",
     r"^       enable UNIT\.\.\., enable PATH\.\.\.", r"^           This command will print"),
    ("x054", "man:touch", "touch: change file timestamps", "description",
     r"^DESCRIPTION", r"^       -f     \(ignored\)"),
    ("x055", "man:cp", "cp: -p, --preserve, --parents and -r options", "options",
     r"^       -p     same as --preserve", r"^       --remove-destination"),
    ("x056", "/usr/share/common-licenses/Apache-2.0",
     "Apache License 2.0: 4. Redistribution, conditions (a) to (c)", "redistribution",
     r"^   4\. Redistribution", r"^      \(d\) If the Work includes"),
    ("x057", "/usr/share/common-licenses/Apache-2.0",
     "Apache License 2.0: title and first definitions", "title",
     r"^                                 Apache License", r"^      \"Legal Entity\""),
    ("x058", "/usr/share/common-licenses/GPL-3",
     "GNU GPL version 3: 8. Termination", "termination",
     r"^  8\. Termination\.", r"^  9\. Acceptance Not Required"),
    ("x059", "/usr/share/common-licenses/MPL-2.0", "Mozilla Public License 2.0: 3.1 and 3.2",
     "distribution", r"^3\.1\. Distribution of Source Form", r"^3\.3\. Distribution of a Larger"),
    ("x060", "/usr/share/doc/base-files/FAQ", "base-files FAQ: /etc/issue and the testing "
     "distribution", "issue", r"^\* Questions about /etc/issue", r"^Q\. Why \"trixie/sid\""),
    ("x061", "/usr/share/doc/base-passwd/README", "base-passwd README: master copies of "
     "/etc/passwd and /etc/group", "readme", r"^This package supplies", r"^    64010 \| alias"),
    ("x062", "/usr/share/doc/grep/NEWS.gz", "GNU grep NEWS: release 3.8", "release-3.8",
     r"^\* Noteworthy changes in release 3\.8", r"^\*\* Bug fixes"),
    ("x063", "man:git-clone", "git clone: --depth and other shallow clone options", "depth",
     r"^       --depth <depth>", r"^       --\[no-\]single-branch"),
    ("x064", "man:less", "less: searching commands", "searching",
     r"^       /pattern", r"^       \?pattern"),
]  # fmt: skip


def man_text(page: str) -> str:
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    rendered = subprocess.run(
        ["man", "--nj", "--nh", "-P", "cat", page],
        env=env,
        capture_output=True,
        check=True,
    ).stdout
    return subprocess.run(
        ["col", "-bx"], input=rendered, env=env, capture_output=True, check=True
    ).stdout.decode("utf-8")


def man_path(page: str) -> str:
    return subprocess.run(
        ["man", "-w", page], capture_output=True, check=True, text=True
    ).stdout.strip()


def file_text(path: str) -> str:
    if path.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    return Path(path).read_text(encoding="utf-8")


def excerpt(text: str, start: str, end: str, where: str) -> list[str]:
    lines = text.splitlines()
    i = next((k for k, ln in enumerate(lines) if re.search(start, ln)), None)
    if i is None:
        raise LookupError(f"{where}: no line matches start {start!r}")
    j = next((k for k in range(i + 1, len(lines)) if re.search(end, lines[k])), None)
    if j is None:
        raise LookupError(f"{where}: no line after {start!r} matches end {end!r}")
    return lines[i:j]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _table_row(line: str) -> bool:
    """A line with a column gap (three or more spaces inside it): a table row or a tag."""
    return re.search(r"\S   +\S", line) is not None


def _text_column(line: str) -> int:
    """Where the running text of a line starts: after a column gap if it has one."""
    gap = re.search(r"\S   +(?=\S)", line)
    return gap.end() if gap else _indent(line)


_ITEM = re.compile(r"^(\* |- |\(\w\) |\d+\. |[A-Z]\. |○ )")


def clean(lines: list[str]) -> str:
    """Re-join wrapped lines; drop indentation and runs of spaces.

    A line continues the previous one (same paragraph) when the previous one ran close to the
    wrap width and this one starts where the previous one's running text starts, or a little
    further in or out (hanging first lines); table rows and list items start new lines.
    """
    out: list[str] = []
    prev: str | None = None  # previous raw line in the same block
    for raw in lines:
        raw = raw.replace("\t", "    ").rstrip()
        if not raw.strip():
            prev = None
            continue
        piece = re.sub(r"\s+", " ", raw.strip())
        joinable = (
            prev is not None
            and len(prev) >= 58
            and not _table_row(raw)
            and not _ITEM.match(piece)
            and (
                _indent(raw) == _text_column(prev)
                or (not _table_row(prev) and abs(_indent(raw) - _indent(prev)) <= 6)
            )
        )
        if joinable and out:
            sep = "" if re.search(r"\w-$", out[-1]) and piece[:1].islower() else " "
            out[-1] = out[-1] + sep + piece
        else:
            out.append(piece)
        prev = raw
    return "\n".join(out)


def build() -> list[dict[str, str]]:
    docs, errors = [], []
    cache: dict[str, str] = {}
    for doc_id, source, title, frag, start, end in SPECS:
        if source.startswith("man:"):
            page = source[4:]
            text = cache.setdefault(source, man_text(page))
            url = f"file://{man_path(page)}#{frag}"
        else:
            text = cache.setdefault(source, file_text(source))
            url = f"file://{source}#{frag}"
        try:
            body = clean(excerpt(text, start, end, f"{doc_id} {source}"))
        except LookupError as exc:
            errors.append(str(exc))
            continue
        docs.append({"id": doc_id, "title": title, "url": url, "text": body})
    if errors:
        raise SystemExit("\n".join(errors))
    return sorted(docs, key=lambda d: d["id"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("corpus.jsonl")))
    a = ap.parse_args(argv)
    docs = build()
    with open(a.out, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    sizes = [len(d["text"]) for d in docs]
    print(f"{len(docs)} documents, {min(sizes)}-{max(sizes)} characters", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
