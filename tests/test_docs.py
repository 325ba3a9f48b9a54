import ast
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
PYTHON_BLOCK = re.compile(r"```python\n(.*?)^\s*```", re.DOTALL | re.MULTILINE)


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


class TestDocs:
    @pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
    def test_relative_links_resolve(self, page):
        """Every relative link in the docs points to a file of the repository."""
        broken = [
            target
            for target in LINK.findall(page.read_text())
            if "://" not in target and not (page.parent / target).exists()
        ]

        assert broken == []

    @pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
    def test_python_blocks_parse(self, page):
        """Every python code block in the docs is valid Python."""
        for block in PYTHON_BLOCK.findall(page.read_text()):
            ast.parse(textwrap.dedent(block))

    def test_every_page_is_in_the_index(self):
        """docs/index.md links every page of docs/."""
        index = (ROOT / "docs" / "index.md").read_text()
        pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}

        assert {p for p in pages if f"({p})" not in index} == set()

    def test_readme_opens_with_the_two_commands(self):
        """The README's first two code blocks run the demo and the test suite."""
        blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)

        assert "nox -s demo" in blocks[0]
        assert "nox -s tests" in blocks[1]
        assert "nox -s tests" in (ROOT / ".ci" / "run").read_text()
