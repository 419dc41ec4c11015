"""The one spec-file loader: YAML or JSON by suffix, and errors that name the file."""

from __future__ import annotations

import pytest

from winnow.search_space.spec import load_space
from winnow.search_space.specfile import SpecError, SpecFileError, load_yaml_or_json


def test_yaml_and_json_give_the_same_mapping(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nlist: [1, 2]\n")
    (tmp_path / "a.json").write_text('{"name": "a", "list": [1, 2]}')
    assert load_yaml_or_json(tmp_path / "a.yaml") == load_yaml_or_json(tmp_path / "a.json")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "name: [unclosed", "not valid YAML"),
        ("bad.json", "{'single': 'quotes'}", "not valid JSON"),
        ("list.yaml", "- a\n- b\n", "a thing is a mapping with a 'name'"),
    ],
)
def test_errors_are_one_type_naming_the_file(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(SpecFileError) as raised:
        load_yaml_or_json(tmp_path / name, "thing", expect="a mapping with a 'name'")
    assert isinstance(raised.value, SpecError) and raised.value.path == tmp_path / name
    assert str(raised.value).startswith(f"{tmp_path / name}: {message}")


def test_a_missing_file_says_what_was_looked_for(tmp_path):
    with pytest.raises(SpecFileError, match="missing.yaml: no search-space file; see"):
        load_yaml_or_json(tmp_path / "missing.yaml", "search space", hint="; see")


def test_an_invalid_space_file_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("architecture: {family: mlp}\nnormalization: sparkle\n")
    with pytest.raises(SpecFileError) as raised:
        load_space(path)
    assert str(raised.value).startswith(f"{path}: invalid search space:\n  field '")
    assert "sparkle" in str(raised.value)
