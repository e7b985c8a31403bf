"""The documentation site: the guides in this folder (MyST Markdown) and the plugin API's reference, generated from
its docstrings. Build: `sphinx-build -W docs docs/_build` (the `docs` extra; CI builds it with warnings as errors)."""

project = "harness"
author = "the harness authors"
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3  # `page.md#a-heading` links, as GitHub renders them
myst_enable_extensions = ["colon_fence"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "alabaster"
html_title = "harness"
# Links to files beside the guides (benchmarks/, examples/, the suites) point into the repository, not into the
# site: tests/test_docs.py checks that each resolves; the site leaves them as they are.
suppress_warnings = ["myst.xref_missing"]
