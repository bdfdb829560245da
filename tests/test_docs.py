"""The README and the guides cannot drift: every command in their fenced blocks runs (its options parsed by the
real parser; a spec in the repository dry-run), every link resolves, and the command reference is the parsers'."""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
from conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_BLOCK = re.compile(r"```(?:bash|sh|console)\n(.*?)```", re.S)
# programs whose commands are checked for shell syntax only: installers, cloud CLIs, tools of their own
SYNTAX_ONLY = {"pip", "ray", "aws", "tensorboard", "wandb", "bash", "git", "du", "ssh", "kill"}
# `python -m` modules run as the docs say: the test runner itself is not run from inside a test
NOT_RUN = {"pytest"}


def shell_commands(path: Path) -> list[str]:
    """Each command of the file's shell blocks: continuation lines joined, `&&`-chains split, `&` dropped."""
    out = []
    for block in SHELL_BLOCK.findall(path.read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            out += [part.strip().removesuffix("&").strip() for part in line.split("&&") if part.strip()]
    return out


ALL = [(p.relative_to(REPO).as_posix(), c) for p in DOCS for c in shell_commands(p)]


class _Parsed(Exception):
    """Raised once a command's argparse parser accepted its options: the test stops it there."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        self.namespace = namespace


def _parse_only(monkeypatch) -> None:
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)


def _run_parse_only(argv: list[str], monkeypatch) -> argparse.Namespace:
    """Run `python ARGV...` in this process until its parser has parsed the options (argparse exits on a bad one)."""
    _parse_only(monkeypatch)
    if argv[0] == "-m":
        monkeypatch.setattr(sys, "argv", [argv[1], *argv[2:]])
        runner = lambda: runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        monkeypatch.setattr(sys, "argv", argv)
        runner = lambda: runpy.run_path(str(REPO / argv[0]), run_name="__main__")
    with pytest.raises(_Parsed) as parsed:
        runner()
    return parsed.value.namespace


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_no_shell_block_escapes_the_command_tests(doc):
    """Every fenced shell block, found line by line here (not by the extractor's pattern), gives the command tests
    each of its commands: a block the pattern missed would go untested silently."""
    blocks, inside = [], None
    for line in doc.read_text().splitlines():
        if inside is None and line.strip() in ("```bash", "```sh", "```console"):
            inside = []
        elif inside is not None and line.strip() == "```":
            blocks.append(inside)
            inside = None
        elif inside is not None:
            inside.append(line)
    assert inside is None, f"{doc.name}: a shell block is never closed"
    found = shell_commands(doc)
    for block in blocks:
        text = "\n".join(block).replace("\\\n", " ")
        for line in (x.strip() for x in text.splitlines()):
            if line and not line.startswith("#"):
                assert line.split("&&")[0].strip().removesuffix("&").strip() in found, (doc.name, line)


@pytest.mark.parametrize(("doc", "command"), ALL, ids=[f"{d}:{c[:60]}" for d, c in ALL])
def test_every_documented_command_runs(doc, command, monkeypatch, tmp_path, capsys):
    words = shlex.split(command, comments=True)
    assert words, command
    if words[0] in SYNTAX_ONLY or (words[0] == "python" and words[1:2] == ["-m"] and words[2] in NOT_RUN):
        return  # shlex accepted it
    assert words[0] == "python", f"{doc}: an unknown program in {command!r}: add it to SYNTAX_ONLY or fix the doc"
    monkeypatch.chdir(REPO)
    args = _run_parse_only(words[1:], monkeypatch)
    import torch

    needs_gpu = (getattr(args, "gpus_per_trial", 0) or 0) > 0 and not torch.cuda.is_available()  # refused here
    if words[1] == "run_search.py" and (REPO / args.spec).is_file() and not (args.resume or args.address or needs_gpu):
        monkeypatch.undo()  # the real command, as a dry run on tiny sizes: the spec, --set and every flag checked
        monkeypatch.chdir(REPO)
        from app.cli import main

        extra = ["--dry-run", "--probe-steps", "1"] + ([] if args.profile != "auto" else ["--profile", "smoke"])
        words = _with_written_data(doc, words, args, tmp_path)
        assert main([*words[2:], *extra]) == 0, capsys.readouterr().err


def _with_written_data(doc: str, words: list[str], args, tmp_path: Path) -> list[str]:
    """A `--data` folder the same doc writes first (`python -m mtl.data.nyuv2 --root DIR`): written here, small, in
    a temporary folder that stands in for it."""
    data = getattr(args, "data", None)
    writes = [c for d, c in ALL if d == doc and c.startswith("python -m mtl.data.nyuv2") and f"--root {data}" in c]
    if not data or Path(data).exists() or not writes:
        return words
    from mtl.data.nyuv2 import main as write_nyuv2

    write_nyuv2(["--root", str(tmp_path / "data"), "--train", "16", "--val", "8", "--size", "32x64"])
    return [str(tmp_path / "data") if w == data else w for w in words]


def test_the_command_reference_is_what_the_parsers_print():
    from app.reference import reference

    assert (REPO / "docs" / "reference.md").read_text() == reference(), \
        "docs/reference.md is stale: python -m app.reference --write docs/reference.md"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_every_link_resolves(doc):
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.exists(), f"{doc.name}: a link to {target} that does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{doc.name}: no heading #{anchor} in {path.name}"


def test_the_readme_is_read_in_five_minutes():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    quick = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    assert [line for line in quick.splitlines() if line.strip() and not line.startswith("#")] == [
        "pip install -e . && python run_search.py ablations/task_weights.yaml",
        'pip install -e ".[test]" && python -m pytest']


# a developer's machine in a doc: the folders these docs were produced in, a test's temporary folders, a user's home
# (the docs' own example home is /home/you)
MACHINE_PATH = re.compile(r"(?<![\w.])(/work/|/root/|/tmp/pytest|/tmp/fext|/home/(?!you/)\w)")


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_no_path_of_a_developer_s_machine_appears(doc):
    found = [line.strip()[:120] for line in doc.read_text().splitlines() if MACHINE_PATH.search(line)]
    assert not found, f"{doc.name}: a machine's own path (write STORAGE or an example such as /home/you): {found}"


def test_recorded_commands_show_the_storage_as_a_placeholder():
    from core.saved import shown_command

    assert shown_command(["run_search.py", "a.yaml", "--storage", "/work/x", "--seeds", "3"]) == \
        "python run_search.py a.yaml --storage STORAGE --seeds 3"
    assert shown_command(["run_search.py", "--storage=s3://b/p"]) == "python run_search.py --storage=STORAGE"


def test_every_help_text_ends_in_a_full_sentence():
    """`--help` of every documented command: the description is the module's whole first paragraph (not a line cut
    mid-sentence), and each option's help ends in a full stop."""
    from app.reference import parsers

    for command, p in parsers().items():
        assert p.description and p.description.rstrip().endswith("."), (command, p.description)
        for a in p._actions:
            if a.dest != "help" and a.help and a.help != argparse.SUPPRESS:
                assert a.help.rstrip().endswith((".", "?", "!")), (command, a.option_strings or a.dest, a.help)


# figures the README shares with a guide: each must read the same wherever it appears (a re-measured figure is
# changed everywhere, or this fails)
SHARED_FIGURES = [
    ("main job's wall time", "375–433 s", ["README.md", "docs/findings-guide.md"]),
    ("main job's storage", "262 MB", ["README.md", "docs/findings-guide.md", "docs/specs.md"]),
    ("main job's best weights", "258 MB", ["README.md", "docs/findings-guide.md", "docs/specs.md"]),
    ("a full checkpoint of the main job's model", "155 MiB", ["docs/performance.md", "docs/specs.md"]),
]


@pytest.mark.parametrize(("what", "figure", "docs"), SHARED_FIGURES, ids=[f[0] for f in SHARED_FIGURES])
def test_the_readme_and_the_guides_agree_on_the_figures_they_share(what, figure, docs):
    missing = [d for d in docs if figure not in (REPO / d).read_text()]
    assert not missing, f"{what}: {figure} is not what {missing} say"


def test_the_readme_s_findings_tally_is_the_page_s():
    page = (REPO / "docs" / "findings.md").read_text()
    tally = re.search(r"Verdicts: ([^.]+)\.", page).group(1)
    assert tally in (REPO / "README.md").read_text().replace("\n", " "), tally
