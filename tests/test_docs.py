"""The README and the guides in docs/ cannot drift from the code: their links resolve, every `harness` command in
their shell blocks is one the CLI accepts (naming files that exist), the README's suite is the shipped one, and
the documentation site builds with warnings as errors."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli import build_parser

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's (and MyST's) anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", _prose(page.read_text()), re.M)}


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def _harness_commands(text: str) -> list[list[str]]:
    """Each `harness ...` invocation in the page's bash blocks, as argv (continuations joined, comments and
    `&&` / `|` chains split)."""
    found = []
    for block in _blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0] if not line.startswith("#") else ""
            for part in re.split(r"&&|\|\||\|", line):
                argv = shlex.split(part)
                if argv[:1] == ["harness"]:
                    found.append(argv[1:])
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page.read_text())):
        if re.match(r"^[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link to {target}: no such file"
        if anchor:
            assert anchor in _anchors(dest), f"{page.name}: link to {target}: no such heading in {dest.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_shell_commands_are_ones_the_cli_accepts(page):
    parser = build_parser()
    for argv in _harness_commands(page.read_text()):
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{page.name}: `harness {shlex.join(argv)}` is refused by the CLI")
        for value in vars(args).values():  # a shipped suite or trial file it names exists
            if isinstance(value, (str, Path)) and re.match(r"^suites/.*\.ya?ml$", str(value)):
                assert (ROOT / value).exists(), f"{page.name}: `harness {shlex.join(argv)}`: no {value}"


def test_the_commands_check_finds_a_bad_command():
    assert _harness_commands("```bash\nharness run suites/x.yaml --no-such-flag && harness status a\n```\n") == [
        ["run", "suites/x.yaml", "--no-such-flag"],
        ["status", "a"],
    ]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "suites/x.yaml", "--no-such-flag"])


def test_the_readme_suite_is_the_quickstart():
    (block,) = _blocks((ROOT / "README.md").read_text(), "yaml")
    shipped = yaml.safe_load((ROOT / "suites" / "quickstart.yaml").read_text())
    assert yaml.safe_load(block) == {k: v for k, v in shipped.items() if k not in ("description", "max_retries")}


@pytest.mark.slow
def test_the_documentation_site_builds_without_warnings(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "index.html").exists() and (tmp_path / "api.html").exists()
    api = (tmp_path / "api.html").read_text()
    for name in ("register_method", "Method", "MixedBatch", "Loop", "register_model", "register_dataset"):
        assert name in api, f"the plugin API reference lacks {name}"
