"""Packaging for distributed: ``pip install .`` or ``pip install -e ".[test]"``."""
import os

from setuptools import find_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "requirements.txt")) as f:
    install_requires = [line.strip() for line in f if line.strip() and not line.startswith("#")]
with open(os.path.join(here, "README.rst")) as f:
    long_description = f.read()
# One source for the version: distributed/_version.py (read, not imported).
with open(os.path.join(here, "distributed", "_version.py")) as f:
    version = next(line.split('"')[1] for line in f if line.startswith("__version__"))

extras_require = {
    # cryptography: the tests generate their own CA and certificates.
    # asyncssh: SSHCluster's tests run against a loopback sshd (test_ssh.py).
    # dask-jobqueue: test_jobqueue.py and test_slurm.py run its LocalCluster and SLURMCluster against us.
    # joblib, scikit-learn: test_joblib.py drives GridSearchCV through joblib's dask backend (issue 16).
    "test": ["pytest >= 7", "pytest-timeout >= 2", "hypothesis >= 6", "numpy", "cryptography", "asyncssh >= 2.14",
             "dask-jobqueue >= 0.9", "joblib >= 1.3", "scikit-learn"],
    # SSHCluster (distributed/deploy/ssh.py) starts remote processes over asyncssh.
    "ssh": ["asyncssh >= 2.14"],
    # Security.temporary() (self-signed credentials made on the fly) needs it.
    "tls": ["cryptography"],
    "dask": ["dask[array,dataframe,bag] >= 2025.1", "numpy", "pandas"],
}

setup(
    name="distributed",
    version=version,
    description="Parallel and distributed computing with a central scheduler",
    long_description=long_description,
    long_description_content_type="text/x-rst",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(exclude=["*.tests", "*.tests.*"]) + ["distributed.tests"],
    install_requires=install_requires,
    extras_require=extras_require,
    entry_points={
        "console_scripts": [
            "dask-scheduler=distributed.cli.dask_scheduler:main",
            "dask-worker=distributed.cli.dask_worker:main",
            "dask-spec=distributed.cli.dask_spec:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: System :: Distributed Computing",
    ],
)
