"""Every `docs/<page>.md#<anchor>` the code cites names a real section."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
CITATION = re.compile(r"docs/(\w+\.md)((?:#[\w-]+)?(?:(?:,| and) #[\w-]+)*)")


def anchors(page: pathlib.Path) -> set:
  """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-'."""
  out = set()
  for line in page.read_text(encoding="utf-8").splitlines():
    if line.startswith("#"):
      title = line.lstrip("#").strip().lower()
      out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
  return out


def test_cited_sections_exist():
  files = [p for d in ("dynjax", "configs", "experiments", "tests", "benchmarks", "examples")
           for p in (ROOT / d).rglob("*.py")] + [ROOT / "README.md"]
  files += list((ROOT / "docs").glob("*.md"))
  cited = 0
  for path in files:
    for page, tail in CITATION.findall(path.read_text(encoding="utf-8")):
      target = ROOT / "docs" / page
      assert target.exists(), f"{path}: cites missing docs/{page}"
      for anchor in re.findall(r"#([\w-]+)", tail):
        assert anchor in anchors(target), f"{path}: docs/{page}#{anchor} is not a section"
        cited += 1
  assert cited >= 30
