import wasinn_lab
from wasinn_lab import errors


def test_exported_names_exist_and_errors_share_one_root() -> None:
    for name in wasinn_lab.__all__:
        assert hasattr(wasinn_lab, name), name
    for name in errors.__all__:
        assert issubclass(getattr(wasinn_lab, name), wasinn_lab.WasiNNLabError), name
