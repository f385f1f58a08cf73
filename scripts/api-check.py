#!/usr/bin/env python3
"""The API guard (issue 16): `buf format`, `buf lint` and `buf breaking` on
proto/, run by `make lint` and .ci/run.

1. `buf format -d --exit-code`: the proto is formatted as buf formats it.
2. `buf lint` with proto/buf.yaml (STANDARD rules). Each `buf:lint:ignore`
   comment in the proto must be listed in buf.yaml's comment list, as
   `#   Service.Rpc RULE: reason`, and each listed one must exist: no
   exception hides in a .proto file.
3. `buf breaking` (FILE rules) against the last release: the newest
   `## [X.Y.Z]` entry of CHANGELOG.md, at tag vX.Y.Z. In a clone without
   tags, the release is the commit that added that heading. A breaking
   change passes only if CHANGELOG.md's top entry is `## [Unreleased]` and
   names what breaks, in backticks, in its `### Breaking` part: the message
   or enum (also for a change to one of its fields or values, e.g.
   `AuditRecord`), or the RPC as `Service.Rpc`.

Usage: scripts/api-check.py BUF [REPO_DIR]   (exit 0 clean, 1 findings, 2 error)
"""

import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


class Fail(Exception):
    """A finding: the check fails with this message."""


def run(cmd, cwd, check=False):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def comment_ignores(proto_dir):
    """(Service.Rpc or Message, RULE) for every `buf:lint:ignore` comment."""
    found = set()
    for path in sorted(proto_dir.rglob("*.proto")):
        pending, scope = [], None
        for line in path.read_text().splitlines():
            s = line.strip()
            m = re.match(r"//\s*buf:lint:ignore\s+([A-Z0-9_]+)", s)
            if m:
                pending.append(m.group(1))
                continue
            if s.startswith("//") or not s:
                continue
            m = re.match(r"(service|message|enum)\s+(\w+)", s)
            r = re.match(r"rpc\s+(\w+)", s)
            if m and m.group(1) == "service":
                scope = m.group(2)
                name = scope
            elif m:
                name = m.group(2)
            elif r and scope:
                name = f"{scope}.{r.group(1)}"
            else:
                name = s.split()[0] if pending else None
            for rule in pending:
                found.add((name, rule))
            pending = []
    return found


def listed_ignores(buf_yaml):
    """(element, RULE) from buf.yaml's `#   Element RULE: reason` lines."""
    listed = set()
    for line in buf_yaml.read_text().splitlines():
        m = re.match(r"\s*#\s{3,}([\w.]+)\s+([A-Z0-9_]+):\s*\S", line)
        if m:
            listed.add((m.group(1), m.group(2)))
    return listed


def changelog_entries(text):
    """[(heading, body)] of the `## ` entries, newest first."""
    parts = re.split(r"^## ", text, flags=re.M)[1:]
    return [(p.split("\n", 1)[0].strip(), p.split("\n", 1)[1] if "\n" in p else "") for p in parts]


def last_release(entries):
    for heading, _ in entries:
        m = re.match(r"\[(\d+\.\d+\.\d+)\]", heading)
        if m:
            return m.group(1)
    return None


def release_commit(repo, version):
    """The commit of release `version`: its tag, or the commit that added
    CHANGELOG.md's heading (a clone made without tags). A shallow clone
    without the tag fetches the history and tags from `origin` first: its
    oldest commit would look like the one that added the heading."""
    tag = f"v{version}"

    def tagged():
        p = run(["git", "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}"], repo)
        return p.stdout.strip() if p.returncode == 0 else None

    commit = tagged()
    if commit:
        return commit, f"tag {tag}"
    shallow = run(["git", "rev-parse", "--is-shallow-repository"], repo).stdout.strip() == "true"
    if shallow:
        run(["git", "fetch", "--quiet", "--unshallow", "--tags", "origin"], repo)
        commit = tagged()
        if commit:
            return commit, f"tag {tag} (fetched)"
        if run(["git", "rev-parse", "--is-shallow-repository"], repo).stdout.strip() == "true":
            raise RuntimeError(
                f"release {version} not found: no tag {tag} in this shallow clone, and "
                "`git fetch --unshallow --tags origin` failed; clone with history")
    heading = f"## [{version}]"
    p = run(["git", "log", "--format=%H", "-S", heading, "--", "CHANGELOG.md"], repo)
    commits = p.stdout.split()
    if p.returncode == 0 and commits:
        commit = commits[-1]
        shown = run(["git", "show", f"{commit}:CHANGELOG.md"], repo)
        if heading in shown.stdout:
            return commit, f"commit {commit[:12]} (no tag {tag} in this clone)"
    raise RuntimeError(
        f"release {version} not found: no tag {tag} and no commit adding {heading!r} "
        "to CHANGELOG.md (run `git fetch --tags`)"
    )


def subject(message):
    """What a buf breaking finding names: `Service.Rpc` for an RPC, the
    message or enum for a change to one of its fields or values, else the
    first quoted name."""
    m = re.search(r'RPC "(\w+)" on service "(\w+)"', message)
    if m:
        return f"{m.group(2)}.{m.group(1)}"
    m = re.search(r'on (?:message|enum) "([\w.]+)"', message)
    if m:
        return m.group(1)
    m = re.search(r'"([\w.]+)"', message)
    return m.group(1) if m else None


def breaking_section(body):
    m = re.search(r"^### Breaking[^\n]*\n(.*?)(?=^### |\Z)", body, flags=re.M | re.S)
    return m.group(1) if m else ""


def check(buf, repo):
    proto = repo / "proto"
    problems = []

    p = run([buf, "format", "-d", "--exit-code", "proto"], repo)
    if p.returncode != 0:
        problems.append("buf format: the proto is not formatted (run `buf format -w proto`):\n"
                        + (p.stdout + p.stderr).strip())
    else:
        print("buf format: clean")

    p = run([buf, "lint", "proto"], repo)
    if p.returncode != 0:
        problems.append("buf lint:\n" + (p.stdout + p.stderr).strip())
    else:
        print("buf lint: clean (STANDARD; exceptions in proto/buf.yaml)")
    found = comment_ignores(proto)
    listed = listed_ignores(proto / "buf.yaml")
    for name, rule in sorted(found - listed, key=str):
        problems.append(f"buf:lint:ignore {rule} on {name} is not listed in proto/buf.yaml")
    for name, rule in sorted(listed - found, key=str):
        problems.append(f"proto/buf.yaml lists {name} {rule}, but no such buf:lint:ignore exists")

    entries = changelog_entries((repo / "CHANGELOG.md").read_text())
    version = last_release(entries)
    if version is None:
        raise RuntimeError("CHANGELOG.md names no release (## [X.Y.Z])")
    commit, how = release_commit(repo, version)
    with tempfile.TemporaryDirectory() as base:
        archive = Path(base) / "proto.tar"
        run(["git", "archive", "-o", str(archive), commit, "proto"], repo, check=True)
        with tarfile.open(archive) as t:
            t.extractall(base, filter="data")
        p = run([buf, "breaking", "proto", "--against", str(Path(base) / "proto"),
                 "--error-format", "json"], repo)
    if p.returncode not in (0, 100):
        raise RuntimeError(f"buf breaking failed: {p.stderr.strip()}")
    findings = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    if not findings:
        print(f"buf breaking: clean against {version} ({how})")
    else:
        top, body = entries[0]
        declared = breaking_section(body) if top.startswith("[Unreleased]") else ""
        # The names in backticks (code spans, paired left to right).
        spans = re.findall(r"`([^`\n]*)`", declared)
        undeclared = []
        for f in findings:
            name = subject(f["message"])
            line = f'{f["path"]}:{f["start_line"]}: {f["type"]}: {f["message"]}'
            named = name and any(
                re.search(r"(?<![\w.])" + re.escape(name) + r"(?![\w])", span) for span in spans)
            if named:
                print(f"  declared: {line}")
            else:
                undeclared.append(line)
        if undeclared:
            problems.append(
                f"buf breaking against {version} ({how}): breaking changes that CHANGELOG.md's top "
                "entry does not declare (name each, in backticks, under `### Breaking` of "
                "`## [Unreleased]`):\n  " + "\n  ".join(undeclared))
        else:
            print(f"buf breaking: {len(findings)} breaking change(s) against {version} ({how}), "
                  "each declared in CHANGELOG.md's top entry")

    if problems:
        raise Fail("\n\n".join(problems))


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    buf = sys.argv[1]
    repo = Path(sys.argv[2] if len(sys.argv) == 3 else Path(__file__).resolve().parent.parent)
    try:
        check(buf, repo)
    except Fail as e:
        print(f"API check failed:\n\n{e}", file=sys.stderr)
        return 1
    except (RuntimeError, OSError) as e:
        print(f"API check could not run: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
