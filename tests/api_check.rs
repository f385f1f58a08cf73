//! The API guard itself (issue 16): `scripts/api-check.py` with the pinned
//! buf, on a scratch git repository holding a copy of `proto/` and a
//! changelog with one release. It passes on the released API, with or
//! without the release tag; it fails on an unformatted proto, a lint
//! finding, an unlisted `buf:lint:ignore`, and a breaking change that the
//! changelog's top entry does not name; it passes once the entry names it.
//! And the real repository passes.

mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const STORE: &str = "proto/shredstore/v1/store.proto";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn check(repo: &Path) -> Output {
    Command::new("python3")
        .arg(root().join("scripts/api-check.py"))
        .arg(tools::tool("buf"))
        .arg(repo)
        .output()
        .unwrap()
}

fn git(repo: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

fn both(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const RELEASED: &str = "# Changelog\n\n## [0.9.0] - 2026-01-01\n\nThe release.\n";

/// A git repository with a copy of `proto/` and a changelog releasing it as
/// 0.9.0 (tagged `v0.9.0` if `tag`).
fn scratch(tag: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let proto = repo.join("proto/shredstore/v1");
    std::fs::create_dir_all(&proto).unwrap();
    std::fs::copy(root().join("proto/buf.yaml"), repo.join("proto/buf.yaml")).unwrap();
    std::fs::copy(root().join(STORE), repo.join(STORE)).unwrap();
    std::fs::write(repo.join("CHANGELOG.md"), RELEASED).unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "release"]);
    if tag {
        git(&repo, &["tag", "v0.9.0"]);
    }
    (dir, repo)
}

fn edit(repo: &Path, file: &str, from: &str, to: &str) {
    let path = repo.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} not in {file}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn the_released_api_is_clean_with_or_without_its_tag() {
    let (_d, repo) = scratch(true);
    let o = check(&repo);
    assert!(o.status.success(), "{}", both(&o));
    assert!(both(&o).contains("buf breaking: clean against 0.9.0 (tag v0.9.0)"));

    let (_d, repo) = scratch(false);
    let o = check(&repo);
    assert!(o.status.success(), "{}", both(&o));
    assert!(
        both(&o).contains("(no tag v0.9.0 in this clone)"),
        "{}",
        both(&o)
    );
}

#[test]
fn a_shallow_clone_fetches_the_release_or_refuses() {
    let (dir, repo) = scratch(true);
    // A commit after the release, so a depth-1 clone lacks the release.
    edit(
        &repo,
        STORE,
        "// Append, read and erase",
        "// Appends, reads and erases",
    );
    git(&repo, &["commit", "-q", "-am", "after"]);
    let url = format!("file://{}", repo.display());
    let shallow = dir.path().join("shallow");
    git(
        dir.path(),
        &["clone", "-q", "--depth", "1", "--no-tags", &url, "shallow"],
    );
    let o = check(&shallow);
    assert!(o.status.success(), "{}", both(&o));
    assert!(both(&o).contains("clean against 0.9.0 (tag v0.9.0 (fetched))"));

    // Without a reachable origin it cannot know the release: it says so,
    // rather than comparing the API with itself.
    let cut_off = dir.path().join("cut-off");
    git(
        dir.path(),
        &["clone", "-q", "--depth", "1", "--no-tags", &url, "cut-off"],
    );
    git(&cut_off, &["remote", "set-url", "origin", "/nonexistent"]);
    let o = check(&cut_off);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    assert!(both(&o).contains("shallow clone"), "{}", both(&o));
}

#[test]
fn a_breaking_change_fails_until_the_changelog_names_it() {
    let (_d, repo) = scratch(true);
    // Delete AppendResponse.duplicate.
    edit(
        &repo,
        STORE,
        "  // True if client_message_id matched an earlier append (nothing was stored).\n  bool duplicate = 3;\n",
        "",
    );
    let o = check(&repo);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(both(&o).contains("FIELD_NO_DELETE"), "{}", both(&o));

    // Declared, but under the released entry: still refused.
    edit(
        &repo,
        "CHANGELOG.md",
        "The release.\n",
        "The release.\n\n### Breaking\n- Breaks the API: `AppendResponse`.\n",
    );
    assert_eq!(check(&repo).status.code(), Some(1));

    let unreleased = |breaking: &str| {
        format!(
            "# Changelog\n\n## [Unreleased]\n\n### Breaking\n{breaking}\n\n### Added\n- Breaks the API: `AppendResponse` (not under Breaking).\n\n## [0.9.0] - 2026-01-01\n"
        )
    };
    // Refused: another name; the name only in another bullet, or outside a
    // code span; a longer span that merely contains it.
    for breaking in [
        "- Breaks the API: `ReadResponse`.",
        "- Breaks the API: `ReadResponse`.\n- `AppendResponse` loses `duplicate`.",
        "- Breaks the API: AppendResponse, `X`.",
        "- Breaks the API: `AppendResponse.duplicate`, `MyAppendResponse`.",
    ] {
        std::fs::write(repo.join("CHANGELOG.md"), unreleased(breaking)).unwrap();
        let o = check(&repo);
        assert_eq!(o.status.code(), Some(1), "{breaking}: {}", both(&o));
        assert!(both(&o).contains("does not declare"), "{}", both(&o));
    }

    // Named in the Breaks the API bullet of the Unreleased entry (which may
    // wrap): passes, and says so.
    std::fs::write(
        repo.join("CHANGELOG.md"),
        unreleased("- Breaks the API: `ReadResponse`,\n  `AppendResponse` (it loses `duplicate`)."),
    )
    .unwrap();
    let o = check(&repo);
    assert!(o.status.success(), "{}", both(&o));
    assert!(both(&o).contains("1 breaking change(s) against 0.9.0"));

    // An RPC's change is named as Service.Rpc.
    edit(
        &repo,
        STORE,
        "rpc Erase(EraseRequest) returns (EraseResponse);",
        "rpc Erase(EraseRequest) returns (AppendResponse);",
    );
    let o = check(&repo);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(both(&o).contains("RPC_SAME_RESPONSE_TYPE"), "{}", both(&o));
    std::fs::write(
        repo.join("CHANGELOG.md"),
        unreleased("- Breaks the API: `AppendResponse`, `Store.Erase`."),
    )
    .unwrap();
    // (It is a lint finding too: AppendResponse now answers two RPCs.)
    let o = check(&repo);
    assert!(!both(&o).contains("does not declare"), "{}", both(&o));
    assert!(both(&o).contains("for multiple RPCs"), "{}", both(&o));
}

/// The released API with `from` replaced by `to` in store.proto: the check
/// fails (exit 1) and says `needle`.
fn fails_with(from: &str, to: &str, needle: &str) {
    let (_d, repo) = scratch(true);
    edit(&repo, STORE, from, to);
    let o = check(&repo);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(both(&o).contains(needle), "{needle:?} not in {}", both(&o));
}

#[test]
fn lint_format_and_unlisted_exceptions_fail() {
    // A lint finding: a field name that is not lower_snake_case.
    fails_with(
        "message PurgeRequest {}",
        "message PurgeRequest {\n  uint64 dryRun = 1;\n}",
        "lower_snake_case",
    );
    // An exception by comment that buf.yaml does not list.
    fails_with(
        "message PurgeRequest {}",
        "// buf:lint:ignore FIELD_LOWER_SNAKE_CASE\nmessage PurgeRequest {\n  uint64 dryRun = 1;\n}",
        "FIELD_LOWER_SNAKE_CASE on PurgeRequest.dryRun is not listed in proto/buf.yaml",
    );
    // ... also as a block comment, which buf honours too.
    fails_with(
        "  bytes user_id = 1;\n  // The message, stored encrypted.",
        "  /* buf:lint:ignore FIELD_LOWER_SNAKE_CASE */\n  bytes userId = 1;\n  // The message, stored encrypted.",
        "FIELD_LOWER_SNAKE_CASE on AppendRequest.userId is not listed in proto/buf.yaml",
    );
    // A listed exception whose comment is gone: buf lint finds it again.
    fails_with(
        "  // buf:lint:ignore RPC_REQUEST_RESPONSE_UNIQUE\n  rpc Append(",
        "  rpc Append(",
        "for multiple RPCs",
    );
    // A listed exception that excuses nothing.
    let (_d, repo) = scratch(true);
    edit(
        &repo,
        "proto/buf.yaml",
        "  disallow_comment_ignores: false",
        "  #   Store.Erase RPC_REQUEST_STANDARD_NAME: stale.\n  disallow_comment_ignores: false",
    );
    let o = check(&repo);
    assert_eq!(o.status.code(), Some(1), "{}", both(&o));
    assert!(
        both(&o).contains(
            "lists Store.Erase RPC_REQUEST_STANDARD_NAME, but no buf:lint:ignore excuses"
        ),
        "{}",
        both(&o)
    );
    // Not formatted as buf formats it.
    fails_with(
        "  bytes user_id = 1;",
        "  bytes   user_id = 1;",
        "buf format",
    );
}

#[test]
fn the_repository_passes_its_own_check() {
    // CI's clone has the release tags, or at least the release commits.
    let o = check(root());
    assert!(o.status.success(), "{}", both(&o));
}
