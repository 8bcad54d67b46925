#!/usr/bin/env python3
"""Run the shared benchmark yardstick against upstream dask.distributed and ours.

    python benchmarks/run.py [--quick] [--only a,b] [--skip a,b]
                             [--upstream-only | --ours-only] [--out DIR]
                             [--bench PATH] [--append-results] [--report-only]

Both implementations use the import name ``distributed``, so each lives in its
own virtual environment, created on first use:

* ``~/venvs/upstream``: dask[array]==2026.8.0, distributed==2026.8.0, numpy, psutil
* ``~/venvs/ours``:     ``pip install -e "<repo>[dask]" numpy psutil``

The yardstick (``bench_distributed.py``, found at
``<repo>/../shared/bench/bench_distributed.py`` unless ``--bench`` or the
environment variable ``DISTRIBUTED_BENCH`` says otherwise) runs once in each
venv and writes ``upstream.json`` / ``ours.json`` into the output folder
(default ``benchmarks/results/<UTC timestamp>/``).  This script then prints a
table of every metric with the factor by which ours is better or worse than
upstream, writes ``comparison.json`` and the shared ``compare.py`` summary
(``compare.md``), and with ``--append-results`` adds a dated entry to
``benchmarks/RESULTS.md``.

Standard library only; Python 3.11+.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
VENVS = Path.home() / "venvs"
SIDES = ("upstream", "ours")
UPSTREAM_REQUIREMENTS = [
    "dask[array]==2026.8.0",
    "distributed==2026.8.0",
    "numpy",
    "psutil",
]
# Files whose content decides whether the "ours" venv must be reinstalled.
PROJECT_METADATA = ("setup.py", "setup.cfg", "pyproject.toml")
READY_MARKER = ".benchmarks-ready"


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Benchmark upstream dask.distributed against this project "
        "with the shared yardstick (bench_distributed.py).")
    ap.add_argument("--quick", action="store_true",
                    help="smaller sizes and fewer repeats (about 3-5 min per side)")
    ap.add_argument("--only", help="comma-separated sections to run (see bench --list)")
    ap.add_argument("--skip", help="comma-separated sections to leave out")
    side = ap.add_mutually_exclusive_group()
    side.add_argument("--upstream-only", action="store_true",
                      help="run only upstream dask.distributed")
    side.add_argument("--ours-only", action="store_true",
                      help="run only this project's distributed")
    ap.add_argument("--out", type=Path,
                    help="output folder (default benchmarks/results/<UTC timestamp>)")
    ap.add_argument("--bench", type=Path,
                    help="path to bench_distributed.py (default: $DISTRIBUTED_BENCH "
                    "or <repo>/../shared/bench/bench_distributed.py)")
    ap.add_argument("--append-results", action="store_true",
                    help="append a dated entry to benchmarks/RESULTS.md")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing; rebuild the table from the JSON files "
                    "already in --out")
    ap.add_argument("--reinstall", action="store_true",
                    help="re-run pip install in the venvs even if they look ready")
    args = ap.parse_args(argv)
    if args.report_only and args.out is None:
        ap.error("--report-only needs --out DIR pointing at an earlier run")
    return args


def wanted_sides(args: argparse.Namespace) -> list[str]:
    if args.upstream_only:
        return ["upstream"]
    if args.ours_only:
        return ["ours"]
    return list(SIDES)


def utc_stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def find_bench(explicit: Path | None) -> Path:
    """The yardstick script: --bench, then $DISTRIBUTED_BENCH, then shared/."""
    env = os.environ.get("DISTRIBUTED_BENCH")
    if explicit is not None:
        path = explicit
    elif env:
        path = Path(env)
    else:
        path = REPO_ROOT.parent / "shared" / "bench" / "bench_distributed.py"
    path = path.expanduser().resolve()
    if not path.is_file():
        sys.exit(f"error: benchmark script not found: {path} "
                 "(use --bench PATH or DISTRIBUTED_BENCH)")
    return path


# ---------------------------------------------------------------------------
# virtual environments
# ---------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[run.py] {msg}", flush=True)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def project_fingerprint(root: Path) -> str:
    """Hash of the packaging files, so that a changed setup.py triggers a reinstall."""
    h = hashlib.sha256()
    for name in PROJECT_METADATA:
        f = root / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def has_project_metadata(root: Path) -> bool:
    return any((root / name).is_file() for name in ("setup.py", "pyproject.toml"))


def install_spec(side: str) -> tuple[list[str], str]:
    """pip arguments for one side and a fingerprint describing them."""
    if side == "upstream":
        return list(UPSTREAM_REQUIREMENTS), " ".join(UPSTREAM_REQUIREMENTS)
    pip_args = ["-e", f"{REPO_ROOT}[dask]", "numpy", "psutil"]
    return pip_args, " ".join(pip_args) + " " + project_fingerprint(REPO_ROOT)


def run_checked(cmd: list[str]) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True)


def ensure_venv(side: str, reinstall: bool = False) -> Path:
    """Create ~/venvs/<side> and install its packages unless already done.

    A marker file records what was installed; if it is missing (first run or a
    failed install) or differs (e.g. our setup.py changed), pip runs again.
    """
    venv = VENVS / side
    python = venv_python(venv)
    pip_args, fingerprint = install_spec(side)
    marker = venv / READY_MARKER
    if not python.exists():
        log(f"creating virtualenv {venv} with {sys.executable}")
        run_checked([sys.executable, "-m", "venv", str(venv)])
    if reinstall or not marker.is_file() or marker.read_text() != fingerprint:
        log(f"installing packages into {venv}")
        run_checked([str(python), "-m", "pip", "install", *pip_args])
        marker.write_text(fingerprint)
    else:
        log(f"virtualenv {venv} is ready (use --reinstall to refresh it)")
    return python


# ---------------------------------------------------------------------------
# running the yardstick
# ---------------------------------------------------------------------------


def bench_command(python: Path, bench: Path, json_out: Path,
                  args: argparse.Namespace) -> list[str]:
    cmd = [str(python), str(bench), "--json", str(json_out)]
    if args.quick:
        cmd.append("--quick")
    if args.only:
        cmd += ["--only", args.only]
    if args.skip:
        cmd += ["--skip", args.skip]
    return cmd


def run_bench(cmd: list[str], log_path: Path) -> int:
    """Run one side, echoing its output and keeping a copy in log_path."""
    log("$ " + " ".join(cmd))
    with open(log_path, "w") as lf, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL, cwd=BENCH_DIR) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            lf.write(line)
        return proc.wait()


def load_report(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------


@dataclass
class Row:
    section: str
    metric: str
    unit: str
    better: str | None
    upstream: float | None
    ours: float | None

    @property
    def factor(self) -> float | None:
        """How many times better ours is than upstream (>1 better, <1 worse)."""
        up, ours = self.upstream, self.ours
        if up is None or ours is None or self.better not in ("lower", "higher"):
            return None
        if self.better == "lower":
            return up / ours if ours > 0 else None
        return ours / up if up > 0 else None

    def verdict(self) -> str:
        if self.better not in ("lower", "higher"):
            return "n/a (no direction)" if self.ours is not None else "-"
        f = self.factor
        if f is None:
            return "-"
        if 0.995 <= f <= 1.005:
            return "same"
        if f > 1:
            return f"{f:.2f}x better"
        return f"{1 / f:.2f}x worse"

    def to_json(self) -> dict[str, Any]:
        return {"section": self.section, "metric": self.metric, "unit": self.unit,
                "better": self.better, "upstream": self.upstream, "ours": self.ours,
                "factor_better": self.factor, "verdict": self.verdict()}


def metric_names(reports: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """(section, metric) pairs in first-seen order across the reports."""
    names: list[tuple[str, str]] = []
    for rep in reports:
        for sname, sec in rep.get("sections", {}).items():
            for mname in sec.get("metrics", {}):
                if (sname, mname) not in names:
                    names.append((sname, mname))
    return names


def lookup(report: dict[str, Any] | None, section: str, metric: str) -> dict[str, Any] | None:
    if report is None:
        return None
    return report.get("sections", {}).get(section, {}).get("metrics", {}).get(metric)


def build_rows(up: dict[str, Any] | None, ours: dict[str, Any] | None) -> list[Row]:
    rows = []
    for sname, mname in metric_names(r for r in (up, ours) if r):
        mu, mo = lookup(up, sname, mname), lookup(ours, sname, mname)
        meta = mu or mo or {}
        rows.append(Row(section=sname, metric=mname, unit=meta.get("unit", ""),
                        better=meta.get("better"),
                        upstream=mu["median"] if mu else None,
                        ours=mo["median"] if mo else None))
    return rows


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.01:
        return f"{v:.3f}"
    return f"{v:.2e}"


def version_of(report: dict[str, Any] | None) -> str:
    if report is None:
        return "not run"
    return str(report.get("versions", {}).get("distributed") or "?")


def markdown_table(rows: list[Row], up: dict[str, Any] | None,
                   ours: dict[str, Any] | None) -> str:
    arrow = {"lower": "lower", "higher": "higher"}
    lines = [
        f"| section.metric | unit | better | upstream {version_of(up)} "
        f"| ours {version_of(ours)} | ours vs upstream |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r.section}.{r.metric} | {r.unit} | {arrow.get(r.better or '', '-')} "
                     f"| {fmt(r.upstream)} | {fmt(r.ours)} | {r.verdict()} |")
    return "\n".join(lines)


def section_notes(name: str, report: dict[str, Any] | None) -> list[str]:
    """Non-ok sections and machine noise of one side, as short text lines."""
    if report is None:
        return []
    out = []
    secs = report.get("sections", {})
    bad = {n: s.get("status") for n, s in secs.items() if s.get("status") != "ok"}
    if bad:
        out.append(f"{name}: sections not ok: "
                   + ", ".join(f"{n}={st}" for n, st in bad.items()))
    noise = [s.get("cpu_cores_others") for s in secs.values()
             if isinstance(s.get("cpu_cores_others"), (int, float))]
    if noise:
        out.append(f"{name}: CPU cores used by other processes during sections: "
                   f"max {max(noise):.2f}")
    if report.get("env_error"):
        out.append(f"{name}: environment probe failed: {report['env_error']}")
    return out


def comparison_json(rows: list[Row], reports: dict[str, dict[str, Any] | None],
                    paths: dict[str, Path]) -> dict[str, Any]:
    sides = {}
    for side, rep in reports.items():
        if rep is None:
            sides[side] = None
            continue
        sides[side] = {
            "json": str(paths[side]),
            "mode": rep.get("mode"),
            "started_at": rep.get("started_at"),
            "finished_at": rep.get("finished_at"),
            "versions": rep.get("versions"),
            "host": rep.get("host"),
            "status": {n: s.get("status") for n, s in rep.get("sections", {}).items()},
        }
    return {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "factor_meaning": "factor_better > 1: ours is that many times better than "
                          "upstream (respecting each metric's 'better' direction); "
                          "< 1: worse",
        "sides": sides,
        "rows": [r.to_json() for r in rows],
    }


def run_shared_compare(bench: Path, paths: list[Path], out: Path) -> None:
    """Invoke the yardstick's compare.py (if present) and keep its markdown."""
    compare = bench.parent / "compare.py"
    if not compare.is_file() or not paths:
        return
    res = subprocess.run([sys.executable, str(compare), *map(str, paths)],
                         capture_output=True, text=True)
    text = res.stdout + (res.stderr if res.returncode else "")
    out.write_text(text)
    log(f"shared compare.py summary written to {out}")


# ---------------------------------------------------------------------------
# RESULTS.md
# ---------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                    break
    except OSError:
        pass
    return {"uname": uname, "nproc": str(os.cpu_count()), "memory": mem,
            "python": platform.python_version()}


def results_entry(rows: list[Row], reports: dict[str, dict[str, Any] | None],
                  out_dir: Path, notes: list[str]) -> str:
    m = machine_info()
    present = [r for r in reports.values() if r]
    mode = present[0].get("mode", "?") if present else "?"
    pythons = ", ".join(f"{s} {r['host'].get('python', '?')}"
                        for s, r in reports.items() if r and r.get("host"))
    ran = " and ".join(s for s, r in reports.items() if r) or "nothing"
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"\n## {date} - {mode} mode, {ran}\n",
        f"- machine: `{m['uname']}`",
        f"- nproc: {m['nproc']}; memory: {m['memory']}",
        f"- python: runner {m['python']}; venvs: {pythons or '-'}",
        f"- versions: upstream distributed {version_of(reports.get('upstream'))}, "
        f"ours {version_of(reports.get('ours'))}",
        f"- raw results: `{display_path(out_dir)}` (not committed)",
    ]
    parts += [f"- {n}" for n in notes]
    parts += ["", markdown_table(rows, reports.get("upstream"), reports.get("ours")), ""]
    return "\n".join(parts)


def display_path(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(p)


def append_results(entry: str) -> Path:
    path = BENCH_DIR / "RESULTS.md"
    with open(path, "a") as f:
        f.write(entry)
    return path


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def prepare_sides(sides: list[str], reinstall: bool) -> tuple[dict[str, Path], bool]:
    """Create the venvs needed.  A side that cannot be installed (our project
    has no setup.py yet, or pip fails) is dropped with a clear message.
    Returns the interpreters to run and whether any installation failed."""
    pythons: dict[str, Path] = {}
    failed = False
    for side in sides:
        if side == "ours" and not has_project_metadata(REPO_ROOT):
            rest = "running upstream only" if "upstream" in sides else "nothing else to run"
            log(f"NOTE: {REPO_ROOT}/setup.py (or pyproject.toml) does not exist yet, "
                f"so our implementation cannot be installed; {rest}.")
            continue
        try:
            pythons[side] = ensure_venv(side, reinstall)
        except subprocess.CalledProcessError as e:
            log(f"ERROR: setting up the {side} venv failed ({e}); skipping {side}.")
            failed = True
    return pythons, failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if sys.version_info < (3, 11):
        log(f"warning: expected Python 3.11+, running {platform.python_version()}")
    bench = find_bench(args.bench)
    out_dir = (args.out or BENCH_DIR / "results" / utc_stamp()).resolve()
    paths = {side: out_dir / f"{side}.json" for side in SIDES}

    rc = 0
    if not args.report_only:
        pythons, failed = prepare_sides(wanted_sides(args), args.reinstall)
        rc = 1 if failed else 0
        if not pythons:
            log("nothing to run")
            return rc or 2
        out_dir.mkdir(parents=True, exist_ok=True)
        for side, python in pythons.items():
            log(f"=== {side}: {python} ===")
            code = run_bench(bench_command(python, bench, paths[side], args),
                             out_dir / f"{side}.log")
            if code:
                log(f"{side}: benchmark exited with code {code} (some section not ok)")
            rc = max(rc, code)

    reports = {side: load_report(paths[side]) for side in SIDES}
    present = [paths[s] for s in SIDES if reports[s] is not None]
    if not present:
        log(f"no results found in {out_dir}")
        return rc or 2
    rows = build_rows(reports["upstream"], reports["ours"])
    notes = [n for s in SIDES for n in section_notes(s, reports[s])]

    (out_dir / "comparison.json").write_text(
        json.dumps(comparison_json(rows, reports, paths), indent=1) + "\n")
    run_shared_compare(bench, present, out_dir / "compare.md")

    print()
    print(markdown_table(rows, reports["upstream"], reports["ours"]))
    for n in notes:
        print(n)
    print(f"\n(medians; 'x better/worse' = ours relative to upstream.)\n"
          f"results in {out_dir}")
    if args.append_results:
        path = append_results(results_entry(rows, reports, out_dir, notes))
        log(f"appended an entry to {path}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
