import wasinn_lab
from wasinn_lab import errors


def test_exported_names_exist_and_errors_share_one_root() -> None:
    for name in wasinn_lab.__all__:
        assert hasattr(wasinn_lab, name), name
    for name in errors.__all__:
        assert issubclass(getattr(wasinn_lab, name), wasinn_lab.WasiNNLabError), name


def test_widgets_are_public_under_their_short_name() -> None:
    import wasinn_lab.widgets
    from wasinn_lab.notebook import widgets

    assert wasinn_lab.widgets.__all__ == widgets.__all__
    for name in wasinn_lab.widgets.__all__:
        assert getattr(wasinn_lab.widgets, name) is getattr(widgets, name), name


def test_every_module_names_its_public_names_in_all() -> None:
    """What a module defines without a leading underscore is its API: ``__all__`` lists it,
    and everything ``__all__`` lists exists."""
    import importlib
    import inspect
    import pkgutil

    for info in pkgutil.walk_packages(wasinn_lab.__path__, "wasinn_lab."):
        if "._data" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{info.name} has no __all__"
        for name in exported:
            assert hasattr(module, name), f"{info.name}.__all__ names {name}, which it lacks"
        defined = {
            name for name, value in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
            and getattr(value, "__module__", None) == info.name
        }
        assert defined <= set(exported), f"{info.name} does not list {sorted(defined - set(exported))} in __all__"


def test_a_tokens_details_are_public_beside_the_token() -> None:
    from wasinn_lab.backends.base import NextTokenDistribution, TokenDetails
    from wasinn_lab.sessions import Token

    assert wasinn_lab.TokenDetails is TokenDetails and wasinn_lab.Token is Token
    assert wasinn_lab.NextTokenDistribution is NextTokenDistribution
    assert Token._fields[-1] == "details" and Token._field_defaults == {"details": None}
