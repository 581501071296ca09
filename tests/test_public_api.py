import importlib
import inspect
import pkgutil
from importlib import metadata

import pytest

import analyzer
import analyzer.errors


def test_all_is_sorted_and_every_name_resolves():
    assert analyzer.__all__ == sorted(analyzer.__all__)
    for name in analyzer.__all__:
        assert getattr(analyzer, name) is not None, name


def test_every_error_of_the_library_is_exported_at_the_top():
    errors = {name for name, obj in vars(analyzer.errors).items()
              if inspect.isclass(obj) and issubclass(obj, analyzer.errors.AnalyzerError)}
    assert set(analyzer.errors.__all__) == errors
    missing = sorted(errors - set(analyzer.__all__))
    assert not missing, f"analyzer.__all__ lacks {missing}"
    for name in errors:
        assert getattr(analyzer, name) is getattr(analyzer.errors, name)


def _public_modules():
    for info in pkgutil.iter_modules(analyzer.__path__):
        if not info.name.startswith("_"):
            yield f"analyzer.{info.name}"


@pytest.mark.parametrize("module_name", sorted(_public_modules()))
def test_every_top_level_module_lists_names_it_has(module_name):
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{module_name}.__all__ names what it lacks: {missing}"


def test_each_top_level_name_is_public_where_it_comes_from():
    # the package re-exports; it defines nothing of its own
    homes = {name: importlib.import_module(module).__all__
             for name, module in analyzer._LAZY.items()}
    for name in analyzer.__all__:
        obj = getattr(analyzer, name)
        if name in homes:
            assert name in homes[name], f"{name} is not in {analyzer._LAZY[name]}.__all__"
        else:
            home = obj.__module__.rsplit("._", 1)[0]  # analyzer.logger._writer -> logger
            assert name in importlib.import_module(home).__all__, (name, home)


def test_the_version_is_the_installed_distributions():
    try:
        installed = metadata.version("audit-analyzer")
    except metadata.PackageNotFoundError:
        installed = "0+unknown"
    assert analyzer.__version__ == installed


def test_importing_the_logger_side_does_not_pull_in_the_analyzer(tmp_path):
    import subprocess
    import sys
    code = ("import sys, analyzer; "
            "assert 'sklearn' not in sys.modules and 'pandas' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('sklearn', 'pandas')))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_documents_every_feature_and_extension_field():
    from pathlib import Path

    from analyzer.events import EXTENSION_FIELDS
    from analyzer.features import FEATURES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [f.name for f in FEATURES if f"`{f.name}`" not in readme]
    assert not missing, f"README lacks features: {missing}"
    assert all(f"`{name}`" in readme for name in EXTENSION_FIELDS)
