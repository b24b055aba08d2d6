"""Every `hub` command answers a wrong input the way README.md says: one line on stderr, exit 1
for an error and 2 for a usage error, never a traceback.

The commands come from README.md's command table, so a command added there without a line in
``SPECS`` fails this test; the runs go in parallel to keep it fast.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from meshhub.config import ConfigError, init_home, normalize_hub_url

from .helpers import HUB_BIN, base_env

ROOT = Path(__file__).resolve().parent.parent
DOWN = "localhost:1"  # a hub URL nothing answers on


@dataclass
class Spec:
    args: list[str] = field(default_factory=list)  # what a correct call adds to the command
    missing: list[str] | None = None  # the call with a required argument left out
    down: int | None = 1  # exit code with the hub down; None: the case makes no sense here
    down_says: str = DOWN  # what its error says then
    runs: str = ""  # why the command's body is not run at all (only the parser cases)
    quiet: bool = False  # by design it prints nothing on stderr and exits 0 (hook)
    settings: bool = True  # it reads the settings (`stop` does not: it works with broken ones)


SPECS: dict[str, Spec] = {
    "init": Spec(["--name", "ann"], missing=[], down=0),
    "start": Spec(["--port", "0"], down=None),
    "stop": Spec(down_says="no hub is running", settings=False),
    "status": Spec(),
    "doctor": Spec(down_says="checks failed: hub"),
    "send": Spec(["ann", "hello"], missing=["ann"]),
    "inbox": Spec(),
    "peers": Spec(),
    "watch": Spec(),
    "call": Spec(["peers"], missing=[]),
    "actions": Spec(down=0),
    "plugins list": Spec(down=0),
    "invite": Spec(),
    "join": Spec(["ABCD-EFGH", "--hub", DOWN, "--name", "bob"],
                 missing=["--hub", DOWN, "--name", "bob"]),
    "invites list": Spec(),
    "invites revoke": Spec(["some-id"], missing=[]),
    "members list": Spec(),
    "members remove": Spec(["bob"], missing=[]),
    "token create": Spec(),
    "token list": Spec(),
    "token revoke": Spec(),
    "pair telegram": Spec(),
    "pair slack": Spec(),
    "pair email": Spec(),
    "surfaces": Spec(),
    "surfaces set": Spec(["auto"], missing=[]),
    "surfaces on": Spec(["ann-telegram"], missing=[]),
    "surfaces off": Spec(["ann-telegram"], missing=[]),
    "approvals": Spec(),
    "approvals answer": Spec(["abcde", "allow"], missing=["abcde"]),
    "approvals policy": Spec(),
    "audit verify": Spec(),
    "audit tail": Spec(),
    "audit export": Spec(),
    "report": Spec(),
    "web": Spec(["--no-open"]),
    "web invite": Spec(),
    "install claude-code": Spec(runs="it edits Claude Code's settings"),
    "uninstall claude-code": Spec(runs="it edits Claude Code's settings"),
    "launch": Spec(runs="it replaces itself with `claude`"),
    "mcp": Spec(runs="it serves MCP on stdin until Claude Code closes it"),
    "hook": Spec(["stop"], quiet=True),
}


def readme_commands() -> list[str]:
    """The commands of README.md's command table: the words after `hub` that name one."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Command line", 1)[1].split("\n## ", 1)[0]
    commands: list[str] = []
    for line in section.splitlines():
        cells = re.split(r"(?<!\\)\|", line)
        if len(cells) < 3 or "`hub " not in cells[1]:
            continue
        for usage in re.findall(r"`hub ([^`]*)`", cells[1]):
            words = []
            for word in usage.split():
                if not re.fullmatch(r"[a-z][a-z-]*", word):
                    break
                words.append(word)
            commands.append(" ".join(words))
    return commands


@dataclass
class Case:
    command: str
    argv: list[str]
    expect: int
    env: dict[str, str] = field(default_factory=dict)
    config: str | None = None  # config.toml text to write into the case's home
    stderr_has: str = ""
    one_line: bool = True


def cases() -> list[Case]:
    out: list[Case] = []
    # unknown option, bad URL, missing argument, hub down, bad setting
    for index, (command, spec) in enumerate(SPECS.items()):
        words = command.split()
        full = [*words, *spec.args]
        out.append(Case(command, [*full, "--no-such-option"], 2, stderr_has="--no-such-option"))
        out.append(Case(command, ["--hub", "notaurl", *full], 2, stderr_has="'notaurl'"))
        if spec.missing is not None:
            out.append(Case(command, [*words, *spec.missing], 2, stderr_has="missing"))
        if spec.runs:
            continue
        if spec.quiet:  # a hook must not disturb Claude Code, whatever the set-up
            out.append(Case(command, ["--hub", DOWN, *full], 0, one_line=False))
            out.append(Case(command, full, 0, config="[hub\n", one_line=False))
            continue
        if spec.down is not None:
            out.append(Case(command, ["--hub", DOWN, *full], spec.down,
                            stderr_has=spec.down_says if spec.down else "",
                            one_line=bool(spec.down)))
        # a broken setting, from the file or the environment (in turns: each run costs time)
        if not spec.settings:
            out.append(Case(command, full, 1, config="[hub\nport = 1",
                            stderr_has="no hub is running"))
        elif index % 2:
            out.append(Case(command, full, 1, config="[hub\nport = 1", stderr_has="config.toml"))
        else:
            out.append(Case(command, full, 1, env={"MESHHUB_PORT": "abc"},
                            stderr_has="MESHHUB_PORT"))
    out += [
        Case("start", ["start", "--port", "99999"], 2, stderr_has="0-65535"),
        Case("start", ["start", "--port", "abc"], 2, stderr_has="--port"),
        Case("start", ["start", "--log-level", "bogus"], 2,
             stderr_has="debug, info, warning, error"),
        Case("start", ["start", "--port", "0"], 1, config="[hub]\nport = 70000",
             stderr_has="[hub] port"),
        Case("peers", ["peers"], 1, env={"MESHHUB_URL": "notaurl"}, stderr_has="MESHHUB_URL"),
        Case("peers", ["peers"], 1, config='[hub]\nurl = "ftp://hub:1"', stderr_has="[hub] url"),
        Case("init", ["init", "--name", "ann", "--hub-url", "/just/a/path"], 2,
             stderr_has="--hub-url"),
        Case("send", ["send", "ann", "hello", "--file", "-"], 2, stderr_has="not both"),
        Case("", ["no-such-command"], 2, stderr_has="no-such-command"),
        # a value out of range or not among the choices is a usage error, before any hub
        Case("send", ["--hub", DOWN, "send", "ann", "hi", "--priority", "bogus"], 2,
             stderr_has="now, next, low"),
        Case("inbox", ["--hub", DOWN, "inbox", "--limit", "0"], 2, stderr_has="--limit"),
        Case("token create", ["--hub", DOWN, "token", "create", "--cap", "bogus"], 2,
             stderr_has="read, send, admin"),
        Case("install claude-code", ["install", "claude-code", "--scope", "bogus"], 2,
             stderr_has="user, project"),
        Case("mcp", ["mcp", "--mode", "bogus"], 2, stderr_has="push, inbox, off"),
        Case("call", ["--hub", DOWN, "call", "send", "x"], 2, stderr_has="name=value"),
    ]
    return out


def run_case(case: Case, home: Path) -> subprocess.CompletedProcess[str]:
    init_home(home, "ann")
    if case.config is not None:
        (home / "config.toml").write_text(case.config)
    env = base_env(home, HOME=str(home), **case.env)
    return subprocess.run([HUB_BIN, *case.argv], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def check(case: Case, out: subprocess.CompletedProcess[str]) -> str | None:
    """What is wrong with this run, or None."""
    said = f"hub {' '.join(case.argv)} -> {out.returncode}\nstdout: {out.stdout[-500:]}\n" \
           f"stderr: {out.stderr[-1500:]}"
    if "Traceback" in out.stdout + out.stderr:
        return f"a traceback: {said}"
    if out.returncode != case.expect:
        return f"exit code {out.returncode}, expected {case.expect}: {said}"
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    if case.one_line and (len(lines) != 1 or not lines[0].startswith("error: ")):
        return f"stderr is not one `error:` line: {said}"
    if case.stderr_has and case.stderr_has not in out.stderr:
        return f"stderr does not say {case.stderr_has!r}: {said}"
    return None


def test_readme_table_and_specs_name_the_same_commands() -> None:
    listed = readme_commands()
    assert len(listed) >= 20, listed
    unspecified = sorted(set(listed) - set(SPECS))
    assert not unspecified, f"add these README commands to SPECS: {unspecified}"
    stale = sorted(set(SPECS) - set(listed))
    assert not stale, f"SPECS names commands README.md does not list: {stale}"


def test_every_command_answers_wrong_input_with_one_line(tmp_path: Path) -> None:
    all_cases = cases()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda ic: run_case(ic[1], tmp_path / f"case{ic[0]}"),
                                enumerate(all_cases)))
    problems = [p for c, r in zip(all_cases, results, strict=True)
                if (p := check(c, r)) is not None]
    assert not problems, f"{len(problems)} of {len(all_cases)} runs:\n\n" + "\n\n".join(problems)


def test_an_oversized_message_or_a_wrong_url_is_one_line(tmp_path: Path, hub) -> None:
    home = tmp_path / "ann"
    init_home(home, "ann")
    env = base_env(home, MESHHUB_URL=hub.url)
    big = "x" * (64 * 1024 + 10)
    for argv in (["send", "ann", big], ["call", "send", "to=ann", f"text={big}"]):
        out = subprocess.run([HUB_BIN, *argv], env=env, capture_output=True, text=True,
                             timeout=60)
        case = Case(argv[0], argv[:2], 1, stderr_has="at most 65536")
        assert check(case, out) is None, check(case, out)
        assert f"{len(big)} bytes" in out.stderr
    not_a_hub = subprocess.run([HUB_BIN, "--hub", hub.url + "/not-the-hub", "peers"], env=env,
                               capture_output=True, text=True, timeout=60)
    case = Case("peers", ["peers"], 1, stderr_has="answered HTTP 404")
    assert check(case, not_a_hub) is None, check(case, not_a_hub)


@pytest.mark.parametrize(("given", "expected"), [
    ("localhost:7420", "http://localhost:7420"),
    ("127.0.0.1:7421/", "http://127.0.0.1:7421"),
    ("[::1]:7420", "http://[::1]:7420"),
    ("http://10.0.0.5:7420", "http://10.0.0.5:7420"),
    ("HTTPS://hub.example.com/", "https://hub.example.com"),
    ("https://hub.example.com/mesh/", "https://hub.example.com/mesh"),
    ("ws://127.0.0.1:7420/ws", "http://127.0.0.1:7420"),
    ("wss://hub.example.com/ws", "https://hub.example.com"),
    ("  http://localhost:7420  ", "http://localhost:7420"),
])
def test_hub_urls_are_normalised(given: str, expected: str) -> None:
    assert normalize_hub_url(given) == expected


@pytest.mark.parametrize("bad", [
    "", "notaurl", "hub.example.com", "localhost:99999", "localhost:abc", "localhost:0",
    "/tmp/hub.sock", "ftp://hub:21", "mailto:ann@example.com", "http://", "http://:7420",
    "http://ann@hub:7420", "http://hub:7420/?x=1", "http://hub name:7420",
])
def test_what_cannot_be_a_hub_url_is_refused_with_the_forms_expected(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        normalize_hub_url(bad)
    assert len(str(err.value).splitlines()) == 1


def test_init_refuses_a_bad_url_before_writing_and_keeps_a_normalised_one(tmp_path: Path
                                                                          ) -> None:
    home = tmp_path / "ann"
    bad = subprocess.run([HUB_BIN, "init", "--name", "ann", "--hub-url", "127.0.0.1:99999"],
                         env=base_env(home), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "--hub-url" in bad.stderr
    assert not home.exists()
    good = subprocess.run([HUB_BIN, "init", "--name", "ann", "--hub-url", "127.0.0.1:7421"],
                          env=base_env(home), capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    saved = tomllib.loads((home / "config.toml").read_text())
    assert saved["hub"]["url"] == "http://127.0.0.1:7421"


def test_version_help_and_usage_lines(tmp_path: Path) -> None:
    env = base_env(tmp_path / "ann")

    def hub(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([HUB_BIN, *args], env=env, capture_output=True, text=True,
                              timeout=60)

    version = hub("--version")
    assert version.returncode == 0 and re.fullmatch(r"meshhub \S+\n", version.stdout)
    helped = hub("send", "--help")
    assert helped.returncode == 0 and "--file" in helped.stdout and not helped.stderr
    bare = hub()
    assert bare.returncode == 2 and "send" in bare.stdout and "Traceback" not in bare.stderr
    missing = hub("send", "ann")
    assert missing.returncode == 2
    assert missing.stderr == "error: missing argument 'TEXT' (or give --file PATH; - reads " \
                             "stdin) (see `hub send --help`)\n"


def test_a_damaged_home_is_one_line_naming_what_to_do(tmp_path: Path) -> None:
    def hub(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([HUB_BIN, *args], env=base_env(home, MESHHUB_PORT="0"),
                              capture_output=True, text=True, timeout=60)

    def one_error(out: subprocess.CompletedProcess[str], says: str) -> None:
        assert out.returncode == 1 and "Traceback" not in out.stdout + out.stderr, out.stderr
        assert len(out.stderr.splitlines()) == 1 and says in out.stderr, out.stderr

    broken_key = tmp_path / "broken-key"
    init_home(broken_key, "ann")
    (broken_key / "identity.key").write_text("not a key\n")
    one_error(hub(broken_key, "peers"), "is not an identity key")
    one_error(hub(broken_key, "start"), "is not an identity key")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    one_error(hub(a_file, "init", "--name", "ann"), "is a file, not a directory")
    broken_db = tmp_path / "broken-db"
    init_home(broken_db, "ann")
    (broken_db / "meshhub.db").write_text("not a database")
    one_error(hub(broken_db, "start"), "cannot open the database")
    assert not (broken_db / "hub.pid").exists()
