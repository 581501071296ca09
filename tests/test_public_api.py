import analyzer


def test_all_is_sorted_and_every_name_resolves():
    assert analyzer.__all__ == sorted(analyzer.__all__)
    for name in analyzer.__all__:
        assert getattr(analyzer, name) is not None, name


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
