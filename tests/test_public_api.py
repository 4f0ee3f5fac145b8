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
