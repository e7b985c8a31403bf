"""harness.core.yaml_files: PyYAML's safe loader (the independent reference for every well-formed file) that also
refuses duplicate keys, alias bombs and files that are not UTF-8 mappings, naming the file and line."""

import pytest
import yaml

from harness.core.config import ConfigError
from harness.core.yaml_files import MAX_YAML_NODES, load_yaml, parse_overrides, parse_yaml

WELL_FORMED = [
    "name: s\ngrid: {method: [vanilla, cut_mixmo], width: [1, 2]}\n",
    "defaults: &d {epochs: 3, lr: 0.1}\nbase:\n  <<: *d\n  lr: 0.2\n",  # a merge key may be overridden
    "a: 1e-3\nb: .inf\nc: null\nd: 'yes'\ne: yes\nf: 0x10\ng: [1, [2, 3]]\n",
    "",
]


@pytest.mark.parametrize("text", WELL_FORMED)
def test_well_formed_yaml_reads_as_pyyaml_safe_load_reads_it(text):
    assert parse_yaml(text, "f.yaml") == yaml.safe_load(text)


def test_a_duplicate_key_names_the_source_and_both_lines():
    with pytest.raises(ConfigError) as err:
        parse_yaml("base:\n  width: 2\nepochs: 3\nbase: {}\n", "suites/x.yaml")
    assert str(err.value) == ("suites/x.yaml: not valid YAML: line 4, column 1: duplicate key 'base' (first at line 1)")


def test_an_alias_bomb_is_refused_before_it_is_expanded():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefg":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, *{previous}, "
        bomb += f"*{previous}, *{previous}, *{previous}, *{previous}]\n"
    with pytest.raises(ConfigError, match=f"bomb.yaml: more than {MAX_YAML_NODES:,} values once its aliases"):
        parse_yaml(bomb, "bomb.yaml")
    assert parse_yaml("a: &a [1, 2]\nb: [*a, *a]\n", "ok.yaml") == {"a": [1, 2], "b": [[1, 2], [1, 2]]}


def test_python_object_tags_are_not_constructed():
    with pytest.raises(ConfigError, match="evil.yaml: not valid YAML"):
        parse_yaml("x: !!python/object/apply:os.system ['true']\n", "evil.yaml")


def test_overrides_are_yaml_scalars_and_a_missing_equals_is_named():
    assert parse_overrides(["width=4", "lr=0.1", "method=cut_mixmo", "milestones=[1, 2]", "dropout="]) == {
        "width": 4,
        "lr": 0.1,
        "method": "cut_mixmo",
        "milestones": [1, 2],
        "dropout": None,
    }
    with pytest.raises(ConfigError, match=r"^--set 'width': expected key=value$"):
        parse_overrides(["width"])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"- a\n- b\n", "expected a mapping of keys to values, got list"),
        (b"\xff\xfen\x00a\x00", "not UTF-8 text: byte 0 is b'\\xff' (it looks like UTF-16)"),
        (b"a: 1\n\x00\n", "a binary file (it holds NUL bytes)"),
        (b"a: [1, 2\n", "not valid YAML: line 2, column 1"),
    ],
)
def test_a_file_that_is_not_a_yaml_mapping_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "suite.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_yaml(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_a_missing_file_and_an_empty_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: cannot read \(No such file or directory\)"):
        load_yaml(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}
