"""A Griffe extension that gives attrs classes the ``__init__`` attrs generates at import time.

Griffe reads source code, and an ``@attrs.frozen`` / ``@attrs.define`` class has no
``__init__`` in its source, so mkdocstrings would show no signature and warn that every name
in the class's ``Args:`` section "does not appear in the function signature". This builds
that ``__init__`` statically, as Griffe's built-in extension does for dataclasses: fields in
order (inherited ones first), ``init=False`` fields left out, ``kw_only`` honoured (on the
decorator and per field), ``default=`` / ``factory=`` as defaults, and the leading
underscore of private fields stripped as attrs does.

Loaded from mkdocs.yml (``extensions: [docs/_griffe/attrs_init.py]``); excluded from the site.
"""

from __future__ import annotations

from typing import Any

from griffe import (
    Attribute,
    Class,
    Expr,
    ExprCall,
    ExprLambda,
    Extension,
    Function,
    Module,
    Parameter,
    ParameterKind,
    Parameters,
)

_DECORATORS = {
    "attrs.define",
    "attrs.frozen",
    "attrs.mutable",
    "attr.s",
    "attr.attrs",
    "attr.define",
    "attr.frozen",
}
_FIELDS = {"attrs.field", "attr.ib", "attr.attrib", "attr.field"}


def _call_args(expr: Any) -> dict[str, Any]:
    if not isinstance(expr, ExprCall):
        return {}
    return {arg.name: arg.value for arg in expr.arguments if getattr(arg, "name", None) is not None}


def _attrs_decorator(cls: Class) -> Any:
    for decorator in cls.decorators:
        value = decorator.value
        path = value.function.canonical_path if isinstance(value, ExprCall) else None
        if path is None and isinstance(value, Expr):
            path = value.canonical_path
        if path in _DECORATORS:
            return value
    return None


def _own_parameters(cls: Class) -> list[Parameter]:
    decorator = _attrs_decorator(cls)
    class_kw_only = str(_call_args(decorator).get("kw_only")) == "True"
    parameters = []
    for member in cls.members.values():
        if member.is_alias or not isinstance(member, Attribute) or member.annotation is None:
            continue
        if "property" in member.labels or "instance-attribute" not in member.labels:
            continue
        field: dict[str, Any] = {}
        value = member.value
        if isinstance(value, ExprCall) and value.function.canonical_path in _FIELDS:
            field = _call_args(value)
        if str(field.get("init")) == "False":
            continue
        kw_only = class_kw_only or str(field.get("kw_only")) == "True"
        if "factory" in field:
            factory = field["factory"]
            # a fresh value per instance: show what it is (``factory=lambda: X()`` shows X())
            if isinstance(factory, ExprLambda) and not factory.parameters:
                default: Any = factory.body
            else:
                default = ExprCall(function=factory, arguments=[])
        elif field:
            default = field.get("default")
        else:
            default = value
        parameters.append(
            Parameter(
                member.name.lstrip("_"),
                annotation=member.annotation,
                kind=ParameterKind.keyword_only if kw_only else ParameterKind.positional_or_keyword,
                default=default,
                docstring=member.docstring,
            )
        )
    return parameters


def _set_init(cls: Class) -> None:
    if "__init__" in cls.members or _attrs_decorator(cls) is None:
        return
    try:
        mro = list(reversed(cls.mro()))
    except ValueError:
        mro = []
    by_name: dict[str, Parameter] = {}
    for klass in [*mro, cls]:
        if _attrs_decorator(klass) is not None:
            for parameter in _own_parameters(klass):
                by_name.pop(parameter.name, None)
                by_name[parameter.name] = parameter
    positional = [p for p in by_name.values() if p.kind is ParameterKind.positional_or_keyword]
    keyword = [p for p in by_name.values() if p.kind is ParameterKind.keyword_only]
    self_ = Parameter("self", kind=ParameterKind.positional_or_keyword)
    init = Function(
        "__init__",
        lineno=0,
        endlineno=0,
        parent=cls,
        parameters=Parameters(self_, *positional, *keyword),
        returns="None",
    )
    cls.set_member("__init__", init)


def _walk(obj: Module | Class, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if isinstance(obj, Class):
        _set_init(obj)
    for member in list(obj.members.values()):
        if not member.is_alias and (member.is_module or member.is_class):
            _walk(member, seen)  # type: ignore[arg-type]


class AttrsInitExtension(Extension):
    """Create the ``__init__`` of every attrs class in a loaded package."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        """Walk the package once it is loaded."""
        _walk(pkg, set())
