//! The README's "Talking to it" session, run for real (issue 11, item 5):
//! grpcurl 1.8.6 (reflection v1alpha only) against `shredstore serve
//! --insecure-no-auth`, the server `make run` starts. Every `grpcurl` line
//! of the README's first code block in that section is run as written
//! (with the test server's address), must succeed, and must print what the
//! `#` lines right below it say, so the README cannot drift again.
#![cfg(feature = "server")]

mod spawn_server;
mod tools;

use std::process::Command;

/// One command of the session and what its output must show.
struct Step {
    command: String,
    expect: Vec<String>,
}

/// The `grpcurl` commands of the first sh block of the README's section
/// `heading`, with the comment lines directly below each (before a blank
/// line).
fn session(readme: &str, heading: &str) -> Vec<Step> {
    let section = readme
        .split(&format!("{heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("README has a {heading:?} section"));
    let block = section
        .split("```sh")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh code block in that section");
    let mut lines: Vec<String> = Vec::new();
    for raw in block.lines() {
        match lines.last_mut() {
            Some(prev) if prev.ends_with('\\') => {
                prev.pop();
                let trimmed = prev.trim_end().len();
                prev.truncate(trimmed);
                prev.push(' ');
                prev.push_str(raw.trim());
            }
            _ => lines.push(raw.trim().to_owned()),
        }
    }
    let mut steps: Vec<Step> = Vec::new();
    let mut in_step = false;
    for line in lines {
        if line.starts_with("grpcurl ") {
            steps.push(Step {
                command: line,
                expect: Vec::new(),
            });
            in_step = true;
        } else if line.is_empty() {
            in_step = false;
        } else if let (true, Some(comment)) = (in_step, line.strip_prefix("# "))
            && let Some(step) = steps.last_mut()
        {
            step.expect.push(comment.to_owned());
        }
    }
    steps
}

/// Whether grpcurl's `output` shows `expect`: a service name, or a JSON
/// object whose keys must all appear with their values (`"..."` stands for
/// any value).
fn shows(output: &str, expect: &str) -> Result<(), String> {
    // Nested objects as one line: `{"k": {"a": 1}}`.
    let flat: String = output
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace("{ ", "{")
        .replace(" }", "}");
    if !expect.starts_with('{') {
        return if flat.contains(expect) {
            Ok(())
        } else {
            Err(format!("{expect:?} missing"))
        };
    }
    let inner = expect.trim_start_matches('{').trim_end_matches('}');
    for pair in inner.split(", ") {
        let (key, value) = pair
            .split_once(": ")
            .ok_or_else(|| format!("bad expectation {pair:?}"))?;
        let want = if value == "\"...\"" {
            format!("{key}:")
        } else {
            format!("{key}: {value}")
        };
        if !flat.contains(&want) {
            return Err(format!("{want:?} missing"));
        }
    }
    Ok(())
}

/// Runs `steps` against a fresh `shredstore serve --insecure-no-auth`;
/// returns what failed.
fn run_session(steps: &[Step]) -> Vec<String> {
    let grpcurl = tools::tool("grpcurl");
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn_server::spawn_serve([
        std::ffi::OsStr::new("--data-dir"),
        dir.path().join("data").as_os_str(),
    ]);
    let addr = url.trim_start_matches("http://");
    let path = format!(
        "{}:{}",
        grpcurl.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut failures = Vec::new();
    for step in steps {
        let command = step.command.replace("127.0.0.1:50051", addr);
        let out = Command::new("sh")
            .args(["-c", &command])
            .env("PATH", &path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            failures.push(format!(
                "{command}: exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        for e in &step.expect {
            if let Err(why) = shows(&stdout, e) {
                failures.push(format!("{command}: {why} in\n{stdout}"));
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    failures
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn the_readme_grpcurl_session_works() {
    let steps = session(&readme(), "### Talking to it");
    assert!(steps.len() >= 6, "the session has its commands");
    assert!(steps[0].command.ends_with(" list"));
    let failures = run_session(&steps);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The README's conversations session (issue 12).
#[test]
fn the_readme_conversations_session_works() {
    let steps = session(&readme(), "### Conversations");
    assert!(steps.len() >= 8, "the session has its commands");
    assert!(
        steps.iter().all(|s| !s.expect.is_empty()),
        "each step says what it shows"
    );
    let failures = run_session(&steps);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_session_parser_reads_expectations() {
    let readme = "### Talking to it\n\n```sh\ngrpcurl a \\\n  b list\n# one\n# {\"k\": \"1\", \"t\": \"...\"}\n\n# prose\ngrpcurl c\n```\n";
    let steps = session(readme, "### Talking to it");
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].command, "grpcurl a b list");
    assert_eq!(
        steps[0].expect,
        vec!["one", "{\"k\": \"1\", \"t\": \"...\"}"]
    );
    assert!(steps[1].expect.is_empty());
    assert!(shows("{\n  \"k\": \"1\",\n  \"t\": \"9\"\n}", &steps[0].expect[1]).is_ok());
    assert!(shows("{\n  \"k\": \"2\"\n}", &steps[0].expect[1]).is_err());
    // A nested object, as grpcurl prints it over several lines.
    let nested = "{\n  \"seq\": \"1\",\n  \"m\": {\n    \"a\": \"x\"\n  }\n}";
    assert!(shows(nested, "{\"seq\": \"1\", \"m\": {\"a\": \"x\"}}").is_ok());
    assert!(shows(nested, "{\"seq\": \"1\", \"m\": {\"a\": \"y\"}}").is_err());
}
