#!/usr/bin/env python3
"""The API guard (issue 16): `buf format`, `buf lint` and `buf breaking` on
proto/, run by `make lint` and .ci/run.

1. `buf format -d --exit-code`: the proto is formatted as buf formats it.
2. `buf lint` with proto/buf.yaml (STANDARD rules). Each `buf:lint:ignore`
   comment in the proto must be listed in buf.yaml's comment list, as
   `#   Service.Rpc RULE: reason`, and each listed one must excuse a
   finding (buf lint run again with comment ignores disallowed): no
   exception hides in a .proto file.
3. `buf breaking` (FILE rules) against the last release: the newest
   `## [X.Y.Z]` entry of CHANGELOG.md, at tag vX.Y.Z. In a clone without
   tags, the release is the commit that added that heading. A breaking
   change passes only if CHANGELOG.md's top entry is `## [Unreleased]` and
   names what breaks in the `- Breaks the API:` bullet of its `### Breaking`
   part, each as a code span of its own: the message or enum (also for a
   change to one of its fields or values, e.g. `AuditRecord`), the RPC as
   `Service.Rpc`, the service as `Store`.

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


def element_at(path, line_no):
    """The element a lint finding at `line_no` of `path` is about:
    `Service.Rpc` for an RPC, `Message.field` for a field or enum value, the
    name for a service, message or enum."""
    lines = path.read_text().splitlines()
    s = lines[line_no - 1].strip()
    m = re.match(r"(service|message|enum)\s+(\w+)", s)
    if m:
        return m.group(2)
    # The innermost enclosing block still open at this line.
    depth, scope = 0, None
    for prev in reversed(lines[: line_no - 1]):
        t = prev.split("//")[0]
        depth += t.count("}") - t.count("{")
        if depth < 0:
            m = re.match(r"\s*(?:service|message|enum)\s+(\w+)", t)
            if m:
                scope = m.group(1)
                break
            depth = 0
    r = re.match(r"rpc\s+(\w+)", s)
    if r:
        return f"{scope}.{r.group(1)}"
    f = re.match(r"(?:(?:optional|repeated)\s+)?(?:[\w.]+\s+)?(\w+)\s*=", s)
    name = f.group(1) if f else s.split()[0] if s else "?"
    return f"{scope}.{name}" if scope else name


def comment_ignores(buf, repo):
    """(element, RULE) of every finding that a `buf:lint:ignore` comment
    excuses: buf lint again, with comment ignores disallowed (buf itself
    decides which comments count, `//` or `/* */`)."""
    config = (repo / "proto" / "buf.yaml").read_text()
    if "disallow_comment_ignores: false" not in config:
        raise RuntimeError("proto/buf.yaml must say `disallow_comment_ignores: false`")
    strict = config.replace("disallow_comment_ignores: false", "disallow_comment_ignores: true")
    p = run([buf, "lint", ".", "--config", strict, "--error-format", "json"], repo / "proto")
    if p.returncode not in (0, 100):
        raise RuntimeError(f"buf lint failed: {p.stderr.strip()}")
    found = set()
    for line in p.stdout.splitlines():
        if line.strip():
            f = json.loads(line)
            found.add((element_at(repo / "proto" / f["path"], f["start_line"]), f["type"]))
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


DECLARATION = "- Breaks the API:"


def declared_names(body):
    """The names the entry declares broken: the code spans of its
    `- Breaks the API:` bullet under `### Breaking` (up to the next bullet,
    heading or blank line). Other mentions do not declare anything."""
    m = re.search(r"^### Breaking[^\n]*\n(.*?)(?=^### |\Z)", body, flags=re.M | re.S)
    if not m:
        return set()
    names, inside = set(), False
    for line in m.group(1).splitlines():
        if line.startswith(DECLARATION):
            inside = True
        elif inside and (not line.strip() or line.lstrip().startswith(("- ", "#"))):
            inside = False
        if inside:
            names.update(re.findall(r"`([^`\n]*)`", line))
    return names


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
    found = comment_ignores(buf, repo)
    listed = listed_ignores(proto / "buf.yaml")
    for name, rule in sorted(found - listed, key=str):
        problems.append(f"buf:lint:ignore {rule} on {name} is not listed in proto/buf.yaml")
    for name, rule in sorted(listed - found, key=str):
        problems.append(f"proto/buf.yaml lists {name} {rule}, but no buf:lint:ignore excuses "
                        "such a finding")

    entries = changelog_entries((repo / "CHANGELOG.md").read_text())
    version = last_release(entries)
    if version is None:
        raise RuntimeError("CHANGELOG.md names no release (## [X.Y.Z])")
    commit, how = release_commit(repo, version)
    with tempfile.TemporaryDirectory() as base:
        archive = Path(base) / "proto.tar"
        run(["git", "archive", "-o", str(archive), commit, "proto"], repo, check=True)
        with tarfile.open(archive) as t:
            # Our own `git archive`; the data filter where this Python has it.
            if hasattr(tarfile, "data_filter"):
                t.extractall(base, filter="data")
            else:
                t.extractall(base)
        p = run([buf, "breaking", "proto", "--against", str(Path(base) / "proto"),
                 "--error-format", "json"], repo)
    if p.returncode not in (0, 100):
        raise RuntimeError(f"buf breaking failed: {p.stderr.strip()}")
    findings = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    if not findings:
        print(f"buf breaking: clean against {version} ({how})")
    else:
        top, body = entries[0]
        declared = declared_names(body) if top.startswith("[Unreleased]") else set()
        undeclared = []
        for f in findings:
            name = subject(f["message"])
            line = f'{f["path"]}:{f["start_line"]}: {f["type"]}: {f["message"]}'
            if name in declared:
                print(f"  declared: {line}")
            else:
                undeclared.append(line)
        if undeclared:
            problems.append(
                f"buf breaking against {version} ({how}): breaking changes that CHANGELOG.md's top "
                f"entry does not declare (name each, in backticks, in the `{DECLARATION}` bullet "
                "under `### Breaking` of `## [Unreleased]`):\n  " + "\n  ".join(undeclared))
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
