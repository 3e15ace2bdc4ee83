"""README.md is the guide (<= 400 lines), docs/ the reference; every relative link in them resolves."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, *DOCS]

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(path: Path) -> str:
    """The page without fenced blocks and inline code: what a renderer could turn into links and headings."""
    return CODE.sub("code", FENCE.sub("", path.read_text()))


def anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped (code spans keep their text), spaces to hyphens."""
    seen: dict[str, int] = {}
    for line in FENCE.sub("", path.read_text()).splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            slug = re.sub(r"[^\w\- ]", "", match[1].strip().lower()).replace(" ", "-")
            seen[slug] = seen.get(slug, -1) + 1
            if seen[slug]:
                seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def test_readme_is_a_guide_of_at_most_400_lines_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 400
    assert "make train" in text and "make test" in text


def test_every_relative_link_in_readme_and_docs_points_at_a_file_and_heading_that_exist():
    broken = []
    for page in PAGES:
        for target in LINK.findall(prose(page)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            if not path.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_the_docs_index_lists_every_page():
    index = prose(REPO / "docs" / "README.md")
    linked = {target.partition("#")[0] for target in LINK.findall(index)}
    assert {page.name for page in DOCS if page.name != "README.md"} <= linked


def test_the_first_recipe_in_readme_is_the_quickstart_recipe_as_it_is():
    recipe = (REPO / "recipes" / "quickstart.yaml").read_text()
    assert f"```yaml\n{recipe}```" in README.read_text()
