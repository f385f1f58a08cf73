//! The `shredstore serve` binary as an operator runs it: dev mode generates a
//! root key beside the data dir (mode 0600), it prints where it listens, serves,
//! and SIGTERM shuts it down cleanly with acknowledged data kept.
#![cfg(feature = "server")]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

mod spawn_server;

use shredstore::server::proto::admin_client::AdminClient;
use shredstore::server::proto::store_client::StoreClient;
use shredstore::server::proto::{AppendRequest, ReadRequest, StatsRequest};

fn serve(data: &std::path::Path) -> (std::process::Child, String) {
    spawn_server::spawn_serve([std::ffi::OsStr::new("--data-dir"), data.as_os_str()])
}

fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("server did not exit after SIGTERM");
}

/// The first message of `bin-user`, read from the server at `url`.
fn read_first(rt: &tokio::runtime::Runtime, url: String) -> Vec<u8> {
    rt.block_on(async {
        let mut c = StoreClient::connect(url).await.unwrap();
        let mut s = c
            .read(ReadRequest {
                user_id: b"bin-user".to_vec(),
                from_seq: 0,
                limit: 10,
            })
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().unwrap().payload
    })
}

#[test]
fn dev_mode_serves_and_shuts_down_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, url) = serve(&data);
    let key = dir.path().join("data.dev-root.key");
    assert!(key.exists(), "dev key beside the data dir");
    assert!(!data.join("data.dev-root.key").exists());
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let seq = rt.block_on(async {
        let mut c = StoreClient::connect(url.clone()).await.unwrap();
        c.append(AppendRequest {
            user_id: b"bin-user".to_vec(),
            payload: b"kept".to_vec(),
            client_message_id: None,
        })
        .await
        .unwrap()
        .into_inner()
        .seq
    });
    assert_eq!(seq, 1);
    assert!(terminate(&mut child).success(), "clean exit on SIGTERM");

    // Restart with the same dev key: the data is there.
    let (mut child, url) = serve(&data);
    assert_eq!(read_first(&rt, url), b"kept");
    assert!(terminate(&mut child).success());
}

/// `serve --root-key-file NEW --previous-root-key-file OLD` rotates online:
/// it serves during the rotation, Admin.Stats reports it, and afterwards
/// OLD is refused at start naming the retired generation, NEW alone serves.
#[test]
fn rotates_the_root_key_online_through_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let old = dir.path().join("old.key");
    let new = dir.path().join("new.key");
    std::fs::write(&old, [1u8; 32]).unwrap();
    std::fs::write(&new, format!("{}\n", "ab".repeat(32))).unwrap();
    let with = |keys: &[(&str, &std::path::Path)]| {
        let mut args: Vec<std::ffi::OsString> = vec!["--data-dir".into(), data.clone().into()];
        for (flag, path) in keys {
            args.push((*flag).into());
            args.push(path.as_os_str().into());
        }
        spawn_server::spawn_serve(args)
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut child, url) = with(&[("--root-key-file", &old)]);
    rt.block_on(async {
        let mut c = StoreClient::connect(url.clone()).await.unwrap();
        c.append(AppendRequest {
            user_id: b"bin-user".to_vec(),
            payload: b"sealed under the old key".to_vec(),
            client_message_id: None,
        })
        .await
        .unwrap();
    });
    assert!(terminate(&mut child).success());

    let (mut child, url) = with(&[
        ("--root-key-file", &new),
        ("--previous-root-key-file", &old),
    ]);
    assert_eq!(read_first(&rt, url.clone()), b"sealed under the old key");
    let stats = rt.block_on(async {
        let mut admin = AdminClient::connect(url.clone()).await.unwrap();
        for _ in 0..600 {
            let s = admin.stats(StatsRequest {}).await.unwrap().into_inner();
            if !s.rotation_in_progress {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the rotation did not finish in 30 s");
    });
    assert_eq!(stats.root_key_generation, 2);
    assert_eq!(stats.rotation_skipped, 0);
    assert!(terminate(&mut child).success());

    // The old key is refused by name.
    let out = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args(["serve", "--listen", "127.0.0.1:0", "--insecure-no-auth"])
        .arg("--root-key-file")
        .arg(&old)
        .arg("--data-dir")
        .arg(&data)
        .env_remove("SHREDSTORE_ROOT_KEY")
        .env_remove("SHREDSTORE_PREVIOUS_ROOT_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retired") && err.contains("generation 2"),
        "{err}"
    );
    // The new key alone serves everything.
    let (mut child, url) = with(&[("--root-key-file", &new)]);
    assert_eq!(read_first(&rt, url), b"sealed under the old key");
    assert!(terminate(&mut child).success());
}

/// The CLI's backup, journal, inspect and restore against the real binary:
/// a backup restored without a journal newer than it is refused; with the
/// running server as the journal, the user erased since stays erased.
#[test]
fn backs_up_and_restores_through_the_cli_honouring_erasure() {
    use shredstore::server::proto::EraseRequest;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("root.key");
    std::fs::write(&key, [9u8; 32]).unwrap();
    let file = dir.path().join("b.shredbak");
    let journal = dir.path().join("j.shredjnl");
    let restored = dir.path().join("restored");
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_shredstore"))
            .args(args)
            .env_remove("SHREDSTORE_ROOT_KEY")
            .env_remove("SHREDSTORE_PREVIOUS_ROOT_KEY")
            .env_remove("SHREDSTORE_TOKEN")
            .output()
            .unwrap()
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut child, url) = spawn_server::spawn_serve([
        os("--data-dir"),
        data.clone().into(),
        os("--root-key-file"),
        key.clone().into(),
    ]);
    rt.block_on(async {
        let mut c = StoreClient::connect(url.clone()).await.unwrap();
        for user in ["bin-user", "cli-erased"] {
            c.append(AppendRequest {
                user_id: user.as_bytes().to_vec(),
                payload: format!("canary-{user}").into_bytes(),
                client_message_id: None,
            })
            .await
            .unwrap();
        }
    });
    let out = run(&[
        "backup".as_ref(),
        "--addr".as_ref(),
        url.as_ref(),
        "--out".as_ref(),
        file.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("users:               2"), "{stdout}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert!(!bytes.windows(6).any(|w| w == b"canary"));
    assert!(!bytes.windows(10).any(|w| w == b"cli-erased"));

    std::thread::sleep(Duration::from_millis(5));
    rt.block_on(async {
        let mut c = StoreClient::connect(url.clone()).await.unwrap();
        c.erase(EraseRequest {
            user_id: b"cli-erased".to_vec(),
            block_new: false,
            delete_subject_conversations: false,
        })
        .await
        .unwrap();
    });
    let restore = |extra: &[&std::ffi::OsStr]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "restore".as_ref(),
            "--from".as_ref(),
            file.as_os_str(),
            "--data-dir".as_ref(),
            restored.as_os_str(),
            "--root-key-file".as_ref(),
            key.as_os_str(),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = restore(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no erasure journal newer than the backup"),
        "{err}"
    );
    assert!(!restored.exists());

    let out = run(&[
        "journal".as_ref(),
        "--addr".as_ref(),
        url.as_ref(),
        "--out".as_ref(),
        journal.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 erased user(s)"));
    let inspect = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "backup".as_ref(),
            "inspect".as_ref(),
            file.as_os_str(),
            "--journal".as_ref(),
            journal.as_os_str(),
        ];
        args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
        run(&args)
    };
    let out = inspect(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("erased users with key records:        1"),
        "{stdout}"
    );
    assert!(stdout.contains("within the window"), "{stdout}");
    let out = inspect(&["--window-days", "0"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The running server as the journal.
    let out = restore(&["--journal".as_ref(), url.as_ref()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 erasure(s)"), "{stdout}");
    assert!(terminate(&mut child).success());

    let (mut child, url) = spawn_server::spawn_serve([
        os("--data-dir"),
        restored.clone().into(),
        os("--root-key-file"),
        key.clone().into(),
    ]);
    assert_eq!(read_first(&rt, url.clone()), b"canary-bin-user");
    let erased = rt.block_on(async {
        let mut c = StoreClient::connect(url).await.unwrap();
        let mut s = c
            .read(ReadRequest {
                user_id: b"cli-erased".to_vec(),
                from_seq: 0,
                limit: 10,
            })
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap()
    });
    assert!(erased.is_none(), "an erased user came back");
    assert!(terminate(&mut child).success());
}

/// `shredstore erasure-request create|cancel|list` against the real binary
/// (with `--erasure-due-days`): a request is listed pending, cancelled, and
/// one with no grace is run by the server itself; bad ids and grace are
/// refused with exit status 1.
#[test]
fn records_cancels_and_lists_erasure_requests_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("root.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let os = |s: &str| std::ffi::OsString::from(s);
    let (mut child, url) = spawn_server::spawn_serve([
        os("--data-dir"),
        data.into(),
        os("--root-key-file"),
        key.into(),
        os("--erasure-due-days"),
        os("7"),
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = StoreClient::connect(url.clone()).await.unwrap();
        for user in ["cli-ledger-a", "cli-ledger-b"] {
            c.append(AppendRequest {
                user_id: user.as_bytes().to_vec(),
                payload: b"x".to_vec(),
                client_message_id: None,
            })
            .await
            .unwrap();
        }
    });
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_shredstore"))
            .arg("erasure-request")
            .args(args)
            .args(["--addr", &url])
            .env_remove("SHREDSTORE_TOKEN")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "create",
        "--user-id",
        "cli-ledger-a",
        "--grace-ms",
        "600000",
    ]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(" pending handle="), "{out}");
    // Due 7 days after receipt.
    assert!(out.contains("due=") && !out.contains("OVERDUE"), "{out}");
    let id = out.split_whitespace().next().unwrap().to_owned();
    assert_eq!(id.len(), 32, "{out}");
    let (code, out, _) = run(&["list", "--state", "pending"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with(&id), "{out}");
    let (code, _, err) = run(&[
        "create",
        "--user-id",
        "cli-ledger-b",
        "--grace-ms",
        "700000000",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("InvalidArgument"), "{err}");
    let (code, _, err) = run(&["cancel", "not-an-id"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("InvalidArgument"), "{err}");
    let (code, out, err) = run(&["cancel", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(" cancelled "), "{out}");
    let (code, _, err) = run(&["cancel", &id]);
    assert_eq!(code, Some(1));
    assert!(err.contains("FailedPrecondition"), "{err}");

    let (code, out, err) = run(&["create", "--user-id", "cli-ledger-b"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let b = out.split_whitespace().next().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, _) = run(&["list", "--state", "done"]);
        assert_eq!(code, Some(0));
        if out.starts_with(&b) {
            assert!(out.contains("messages_erased=1"), "{out}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never done: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, out, _) = run(&["list"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        !out.contains("cli-ledger"),
        "a user id in the listing: {out}"
    );
    assert!(terminate(&mut child).success());
}

#[test]
fn refuses_to_start_without_auth_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("root.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args(["serve", "--listen", "127.0.0.1:0", "--root-key-file"])
        .arg(&key)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tokens-file"), "{err}");
}

/// Regression (issue 11, item 3): a development root key was generated in
/// any configuration, also with a tokens file, and with `--data-dir .`
/// inside the data directory. Outside development mode the server refuses
/// to start and names where a root key comes from.
#[test]
fn refuses_to_generate_a_root_key_outside_development_mode() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tokens-file"])
        .arg(&tokens)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("SHREDSTORE_ROOT_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--root-key-file") && err.contains("SHREDSTORE_ROOT_KEY"),
        "{err}"
    );
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "nothing but the tokens file was created");
}

/// Development mode with `--data-dir .`: the key lands beside the data
/// directory (its parent), never inside it.
#[test]
fn the_development_key_never_lands_inside_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    std::fs::create_dir(&data).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--data-dir",
            ".",
        ])
        .current_dir(&data)
        .env_remove("SHREDSTORE_ROOT_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = first_line(&mut child);
    assert!(line.contains("listening"), "{line}");
    assert!(terminate(&mut child).success());
    assert!(dir.path().join("store.dev-root.key").exists());
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            assert!(!p.to_string_lossy().contains("dev-root"), "{}", p.display());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
}

/// Regression (issue 11, item 4): plaintext gRPC on a non-loopback address
/// only warned. It is refused unless TLS is configured or
/// `--plaintext-remote` says TLS is terminated in front.
#[test]
fn refuses_plaintext_on_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--insecure-no-auth",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--plaintext-remote") && err.contains("--tls-cert"),
        "{err}"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--insecure-no-auth",
            "--plaintext-remote",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = first_line(&mut child);
    assert!(line.contains("listening on http://0.0.0.0:"), "{line}");
    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");
}

#[test]
fn hash_token_prints_sha256() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shredstore"))
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// The first line the child printed on stdout (the server's address).
fn first_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    line
}
