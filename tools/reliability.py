#!/usr/bin/env python3
"""The reliability and security harness (issue 9) at full size, in one command, with a JSON + Markdown summary.

    nice -n 10 .venv/bin/python tools/reliability.py                 # full size (tens of minutes on 2 cores)
    .venv/bin/python tools/reliability.py --size ci                  # the size CI runs (a few minutes)
    .venv/bin/python tools/reliability.py --pip-audit /tmp/audit/bin/pip-audit   # also run the dependency audit

It runs the harness's test files (test/test_fuzz.py, test_soak.py, test_overload.py, test_faults.py,
test_security.py) with ``PANOPTIC_RELIABILITY_SIZE`` set, collects the figures each check records
(inputs tried, faults injected, memory growth, drops counted, frames lost) and writes
``OUT/reliability.json``, ``OUT/reliability.md``, the pytest log and its JUnit XML, where OUT defaults to
``runs/reliability/<size>-<UTC time>``. The exit status is pytest's (0: every check passed).

The dependency audit needs pip-audit, which is not a project dependency: install it into a throwaway
virtualenv (never into .venv) and pass its path; without it the summary records why the audit did not run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TEST_FILES = ("test/test_fuzz.py", "test/test_soak.py", "test/test_overload.py", "test/test_faults.py",
              "test/test_security.py")
AUDITED = ("requirements/runtime.txt", "requirements/torch.txt", "requirements/dev.txt",
           "requirements/dev-nodeps.txt")


@dataclass
class TestOutcome:
    name: str
    outcome: str  # passed, failed, error, skipped
    seconds: float
    message: str = ""


@dataclass
class AuditOutcome:
    requirements: str
    command: str
    ran: bool
    vulnerabilities: int | None = None  # known vulnerabilities found (None: not determined)
    audited: list[str] = field(default_factory=list)  # packages the vulnerability service answered for
    skipped: dict[str, str] = field(default_factory=dict)  # package -> why it could not be audited
    note: str = ""


@dataclass
class Summary:
    size: str
    started_utc: str
    seconds: float
    command: str
    git_commit: str
    machine: dict[str, Any]
    exit_status: int
    tests: list[TestOutcome]
    figures: list[dict[str, Any]]
    audit: list[AuditOutcome]


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10)
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpus": os.cpu_count(), "load_average_1_5_15": [round(v, 2) for v in load],
            "python": platform.python_version(), "platform": platform.platform(), "nice": os.nice(0)}


def run_tests(size: str, out: Path, python: str, extra: list[str]) -> tuple[int, list[TestOutcome], list[dict]]:
    figures_path = out / "figures.jsonl"
    figures_path.unlink(missing_ok=True)
    env = dict(os.environ, PANOPTIC_RELIABILITY_SIZE=size, PANOPTIC_RELIABILITY_REPORT=str(figures_path),
               PYTHONUNBUFFERED="1")
    junit = out / "junit.xml"
    command = [python, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", f"--junitxml={junit}",
               "--durations=0", *TEST_FILES, *extra]
    with open(out / "pytest.log", "w") as log:
        status = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    tests = []
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    outcome, message = {"failure": "failed"}.get(tag, tag), (el.get("message") or "")[:300]
            tests.append(TestOutcome(f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}", outcome,
                                     round(float(case.get("time", 0.0)), 1), message))
    figures = [json.loads(line) for line in figures_path.read_text().splitlines()] if figures_path.exists() else []
    return status, tests, figures


def run_audit(pip_audit: str | None) -> list[AuditOutcome]:
    outcomes = []
    for req in AUDITED:
        command = f"pip-audit -r {req} --no-deps --disable-pip --progress-spinner off -f json"
        if not pip_audit:
            outcomes.append(AuditOutcome(req, command, False, note="pip-audit is not installed here (it is no "
                                         "project dependency): install it into a throwaway venv and pass "
                                         "--pip-audit PATH"))
            continue
        try:
            proc = subprocess.run([pip_audit, "-r", req, "--no-deps", "--disable-pip", "--progress-spinner", "off",
                                   "-f", "json"], cwd=REPO, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as exc:
            outcomes.append(AuditOutcome(req, command, False, note=f"could not run pip-audit: {exc}"))
            continue
        try:
            doc = json.loads(proc.stdout)
        except ValueError:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            outcomes.append(AuditOutcome(req, command, False, note=f"pip-audit exited {proc.returncode}: {tail}"))
            continue
        deps = doc.get("dependencies", [])
        skipped = {d["name"]: d.get("skip_reason", "") for d in deps if "skip_reason" in d}
        audited = [d["name"] for d in deps if "skip_reason" not in d]
        vulns = sum(len(d.get("vulns", [])) for d in deps)
        note = ("no package could be audited: the vulnerability service did not answer for any of them"
                if deps and not audited else "")
        outcomes.append(AuditOutcome(req, command, True, vulns if audited else None, audited, skipped, note))
    return outcomes


def _cell(value: Any) -> str:
    if isinstance(value, list) and len(value) > 8:
        return f"{len(value)} values, first {json.dumps(value[0])}, last {json.dumps(value[-1])}"
    if isinstance(value, (list, dict)):
        return "`" + json.dumps(value) + "`"
    return str(value).replace("|", "\\|")


def markdown(s: Summary) -> str:
    passed = sum(t.outcome == "passed" for t in s.tests)
    lines = [f"# Reliability harness: {s.size} size", "",
             f"- started {s.started_utc} UTC, took {s.seconds / 60:.1f} min, exit status {s.exit_status}",
             f"- command: `{s.command}`", f"- commit: {s.git_commit}",
             f"- machine: {s.machine['cpus']} CPUs, load average {s.machine['load_average_1_5_15']} at the end, "
             f"Python {s.machine['python']}, nice {s.machine['nice']}",
             f"- tests: {passed} of {len(s.tests)} passed", "", "## Figures", ""]
    for fig in s.figures:
        lines += [f"### {fig['check']} ({fig.get('file', '')})", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in fig.items() if k not in ("check", "file")]
        lines.append("")
    lines += ["## Dependency audit", "", "| requirements | ran | vulnerabilities | audited | not audited | note |",
              "|---|---|---|---|---|---|"]
    for a in s.audit:
        vulns = "n/a" if a.vulnerabilities is None else str(a.vulnerabilities)
        lines.append(f"| {a.requirements} | {'yes' if a.ran else 'no'} | {vulns} | {len(a.audited)} | "
                     f"{len(a.skipped)} | {_cell(a.note or (next(iter(a.skipped.values())) if a.skipped else ''))} |")
    lines += ["", "## Tests", "", "| test | outcome | seconds |", "|---|---|---|"]
    lines += [f"| {t.name} | {t.outcome}{(': ' + _cell(t.message)) if t.message else ''} | {t.seconds} |"
              for t in s.tests]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("full", "ci"), default="full", help="check sizes (default: full)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default runs/reliability/...)")
    parser.add_argument("--python", default=str(REPO / ".venv" / "bin" / "python"), help="interpreter with pytest")
    parser.add_argument("--pip-audit", default=shutil.which("pip-audit"),
                        help="pip-audit executable for the dependency audit (default: pip-audit on PATH)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, e.g. -k soak")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    out = args.out or REPO / "runs" / "reliability" / f"{args.size}-{started.replace(':', '')}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print(f"reliability harness ({args.size} size): running {', '.join(TEST_FILES)}; log in {out / 'pytest.log'}",
          flush=True)
    status, tests, figures = run_tests(args.size, out, args.python, args.pytest_args)
    audit = run_audit(args.pip_audit)
    summary = Summary(size=args.size, started_utc=started, seconds=round(time.monotonic() - t0, 1),
                      command=" ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
                      git_commit=git_commit(), machine=machine(), exit_status=status, tests=tests, figures=figures,
                      audit=audit)
    (out / "reliability.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    (out / "reliability.md").write_text(markdown(summary))
    failed = [t.name for t in tests if t.outcome in ("failed", "error")]
    print(f"{len(tests) - len(failed)} of {len(tests)} checks passed in {summary.seconds / 60:.1f} min"
          + (f"; FAILED: {', '.join(failed)}" if failed else "") + f"\nsummary: {out / 'reliability.md'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
