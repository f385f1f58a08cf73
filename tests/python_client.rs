//! The README's "Generating a client" for Python, run for real (issue 16):
//! grpcio-tools compiles `proto/` as the README's `sh` block says, and the
//! README's `python` block, run as written, appends and reads through a
//! real server with a bearer token. The README cannot drift from the API.
#![cfg(feature = "server")]

mod grpc_support;
mod tools;

use std::path::Path;
use std::process::Command;

use grpc_support::{ADMIN, TestServer, args};

/// The code of the first fenced block with `lang` in the README section
/// headed `heading` (backslash-continued lines joined).
fn block(readme: &str, heading: &str, lang: &str) -> String {
    let section = readme
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("README has a {heading:?} section"));
    let section = section.split("\n## ").next().unwrap();
    section
        .split(&format!("```{lang}\n"))
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap_or_else(|| panic!("a {lang} block in {heading:?}"))
        .replace("\\\n", " ")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_python_client_appends_and_reads() {
    let venv = tools::tools_bin().parent().unwrap().join("py/bin");
    assert!(
        venv.join("python3").is_file(),
        "{} not found: run scripts/test-tools.sh (make test does)",
        venv.display()
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let generate = block(&readme, "### Generating a client", "sh");
    let client = block(&readme, "### Generating a client", "python");
    assert!(generate.contains("grpc_tools.protoc"), "{generate}");

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("backend");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::symlink(root.join("proto"), work.join("proto")).unwrap();
    std::fs::write(work.join("client.py"), &client).unwrap();
    // The venv first on PATH: its `python3` has grpcio and grpcio-tools.
    let path = format!(
        "{}:{}",
        venv.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for line in generate.lines().map(str::trim).filter(|l| !l.is_empty()) {
        run(Command::new("sh")
            .args(["-c", line])
            .current_dir(&work)
            .env("PATH", &path));
    }
    assert!(work.join("gen/shredstore/v1/store_pb2_grpc.py").is_file());

    let server_dir = dir.path().join("server");
    std::fs::create_dir(&server_dir).unwrap();
    let server = TestServer::start(args(&server_dir, true)).await;
    let addr = server.addr.to_string();
    let (work2, path2) = (work.clone(), path.clone());
    let run_client = move |token: Option<&str>| {
        let mut cmd = Command::new("python3");
        cmd.arg("client.py")
            .current_dir(&work2)
            .env("PATH", &path2)
            .env("SHREDSTORE_ADDR", &addr)
            .env_remove("SHREDSTORE_TOKEN");
        if let Some(t) = token {
            cmd.env("SHREDSTORE_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let (first, second, anonymous) = tokio::task::spawn_blocking(move || {
        (
            run_client(Some(ADMIN)),
            run_client(Some(ADMIN)),
            run_client(None),
        )
    })
    .await
    .unwrap();
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(first.status.success(), "{first:?}");
    let out1 = text(&first);
    let lines1: Vec<&str> = out1.lines().collect();
    assert_eq!(lines1.first(), Some(&"appended seq 1"), "{first:?}");
    let row: Vec<&str> = lines1[1].split(' ').collect();
    assert_eq!((row[0], row[2]), ("1", "b'hello'"), "{lines1:?}");
    assert!(row[1].parse::<u64>().unwrap() > 1_700_000_000_000);
    // A second run appends seq 2 and reads both back, in order.
    let out2 = text(&second);
    let lines2: Vec<&str> = out2.lines().collect();
    assert_eq!(lines2[0], "appended seq 2", "{second:?}");
    assert_eq!(lines2.len(), 3, "{lines2:?}");
    assert!(lines2[1].starts_with("1 ") && lines2[2].starts_with("2 "));
    // Without a token the server refuses it: the token is what let it in.
    assert!(!anonymous.status.success());
    assert!(
        String::from_utf8_lossy(&anonymous.stderr).contains("UNAUTHENTICATED"),
        "{anonymous:?}"
    );
    server.stop().await;
}
