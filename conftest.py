"""Test configuration: the harness fixtures for every test in the tree."""
import os

from hypothesis import settings

from distributed.utils_test import *  # noqa: F401,F403

# Fuzzing (security spec §4.6): ``ci`` keeps the run short on 2 cores;
# ``HYPOTHESIS_PROFILE=nightly`` runs 10,000 examples per property.
settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True)
settings.register_profile("nightly", max_examples=10_000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    # Worker directories of this run (and its child processes) go in a
    # directory of its own, so the leak check sees only ours.
    import shutil
    import tempfile

    session_tmp = tempfile.mkdtemp(prefix="distributed-tests-")
    config._distributed_tmp = session_tmp
    os.environ["TMPDIR"] = session_tmp
    tempfile.tempdir = session_tmp
    config.add_cleanup(lambda: shutil.rmtree(session_tmp, ignore_errors=True))


def pytest_addoption(parser):
    parser.addoption("--skip-slow", action="store_true", help="skip tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--skip-slow"):
        import pytest

        skip = pytest.mark.skip(reason="--skip-slow given")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
