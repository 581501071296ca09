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
