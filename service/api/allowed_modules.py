"""Which user code a server may import: the modules of ``winnow serve --allow-module`` and
those under them (``search_space.user_code.check_import_allowed``). Checked, as the data roots
are, when a search is submitted (``SearchServicer``, answering PERMISSION_DENIED before
anything is imported) and again when one starts or resumes (``SearchManager``, ending it
FAILED): a search stored by a server that allowed more, or by ``winnow search run``, must not
import here what this server's operator did not allow."""

from __future__ import annotations

from collections.abc import Iterable

from winnow.search_space.user_code import check_import_allowed, check_module_name
from winnow.service.search_spec import SearchSpec


def allowed_modules(names: Iterable[str]) -> tuple[str, ...]:
    """``--allow-module`` values, each checked to be a dotted module name."""
    return tuple(check_module_name(name) for name in names)


def check_imports(spec: SearchSpec, allowed: tuple[str, ...]) -> None:
    """Raise ``ImportNotAllowedError`` (a PermissionError) naming the field and the module of
    the first user code in ``spec`` that ``allowed`` does not admit."""
    for field, path in spec.imports().items():
        check_import_allowed(path, allowed, field)
