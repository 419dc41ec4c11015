"""docs/spec.md is generated from the pydantic models and registries (``winnow space docs``):
it must be exactly what the generator writes now, and cover every field with a description."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from winnow.search_space.archs import FAMILIES
from winnow.search_space.spec import SearchSpace
from winnow.service import spec_docs
from winnow.service.cli import main
from winnow.service.search_spec import SearchSpec

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "run `winnow space docs > docs/spec.md`"


def models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """A model and every model nested in its fields."""
    found = [model]
    for field in model.model_fields.values():
        nested = spec_docs._nested_model(field.annotation)
        if nested is not None and nested not in found:
            found += models(nested)
    return found


def test_docs_spec_md_is_what_the_models_generate():
    assert (ROOT / "docs" / "spec.md").read_text() == spec_docs.generate(), REGENERATE


def test_winnow_space_docs_prints_the_reference(capsys):
    assert main(["space", "docs"]) == 0
    assert capsys.readouterr().out == spec_docs.generate()


def test_every_field_of_the_spec_the_space_and_each_family_is_documented():
    text = spec_docs.generate()
    every = [*models(SearchSpec), *models(SearchSpace)]
    every += [FAMILIES.get(name).space for name in FAMILIES]
    for model in every:
        for name, field in model.model_fields.items():
            assert f"| `{name}` |" in text, (model.__name__, name)
            assert field.description or name == "family", (
                f"{model.__name__}.{name} has no description: give it an attribute docstring"
            )
    assert "| `max_trials` | int | `50` | >= 1, <= 1000000 |" in text  # type, default, limits
    assert "| `batch_size` | Param | `128` | >= 1, <= 65536 |" in text  # a bounded Param
    assert "| `value` | float | required | finite |" in text


def test_a_registered_family_is_documented_without_editing_the_generator():
    from typing import Literal

    from pydantic import ConfigDict

    class RingSpace(BaseModel):
        """Spec section for ``family: ring``."""

        model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
        family: Literal["ring"] = "ring"
        spokes: int = 6
        """Spokes per ring."""

    nb201 = FAMILIES.get("nb201")
    with FAMILIES.registered("ring", nb201.__class__(**{**vars(nb201), "space": RingSpace})):
        text = spec_docs.generate()
    assert "### `family: ring`" in text
    assert "| `spokes` | int | `6` |  | Spokes per ring. |" in text
