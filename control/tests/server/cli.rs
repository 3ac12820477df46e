//! The `garrison-control` binary next to a control: it refuses plain HTTP
//! on a non-loopback address before touching anything; `token create`
//! mints tokens the running control accepts; `user` refuses to edit the
//! store of a running control and edits it when stopped; `agent revoke`
//! goes through the running control's API over TLS.
use crate::agents::{connect, join, refused_status, until_end};
use crate::harness::{TempDir, run_cli, start};

#[test]
fn run_refuses_plain_http_on_a_non_loopback_address_before_binding() {
    let scratch = TempDir::new("cli-no-tls");
    let data = scratch.path().join("data");
    let data_arg = data.to_str().unwrap();
    let out = run_cli(
        scratch.path(),
        &[
            "run",
            "--no-tls",
            "--listen",
            "192.0.2.1:1",
            "--dns",
            "127.0.0.1:0",
            "--data-dir",
            data_arg,
        ],
    );
    assert!(!out.success, "{}", out.stderr);
    assert!(
        out.stderr.contains("--no-tls") && out.stderr.contains("--insecure"),
        "the refusal names the flags: {}",
        out.stderr
    );
    assert!(out.stderr.contains("192.0.2.1:1"), "{}", out.stderr);
    assert!(!data.exists(), "nothing was created before the refusal");
}

#[test]
fn cli_tokens_work_on_a_running_control_and_accounts_wait_for_it_to_stop() {
    let dir = TempDir::new("cli");
    let scratch = TempDir::new("cli-scratch");
    let data = dir.path().to_str().unwrap().to_string();
    let server = start(dir.path());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = run_cli(
        scratch.path(),
        &["token", "create", "--join", "--data-dir", &data],
    );
    assert!(out.success, "{}", out.stderr);
    let join_token = out.stdout.trim().to_string();
    let (mut stream, secret) = rt.block_on(join(&server, &format!("token={join_token}"), "cli1"));

    let out = run_cli(
        scratch.path(),
        &[
            "token",
            "create",
            "--uid",
            "bootstrap",
            "--ttl",
            "600",
            "--data-dir",
            &data,
        ],
    );
    assert!(out.success, "{}", out.stderr);
    let session = server.anonymous().with_token(out.stdout.trim());
    assert_eq!(session.request("GET", "/v2/apps", None).unwrap().0, 200);

    // The store belongs to the running control.
    let out = run_cli(scratch.path(), &["user", "list", "--data-dir", &data]);
    assert!(!out.success, "{}", out.stdout);
    assert!(
        out.stderr.contains("/acs/api/v1/users"),
        "the refusal says what to use instead: {}",
        out.stderr
    );

    // Revocation through the running control's API (TLS, the data dir's CA).
    let out = run_cli(
        scratch.path(),
        &[
            "agent",
            "revoke",
            "cli1",
            "--api",
            &server.addr.to_string(),
            "--data-dir",
            &data,
        ],
    );
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.contains("\"credential_revoked\":true"),
        "{}",
        out.stdout
    );
    rt.block_on(async {
        until_end(&mut stream).await;
        assert_eq!(
            refused_status(connect(&server, Some(&format!("agent cli1:{secret}"))).await),
            401
        );
    });
    drop(stream);
    drop(server);

    // Stopped: the accounts can be edited in the store.
    let out = run_cli(scratch.path(), &["user", "list", "--data-dir", &data]);
    assert!(out.success, "{}", out.stderr);
    assert!(
        out.stdout.contains("\"uid\":\"bootstrap\""),
        "{}",
        out.stdout
    );
    let password_file = scratch.path().join("carol.password");
    std::fs::write(&password_file, "carol's long password\n").unwrap();
    let out = run_cli(
        scratch.path(),
        &[
            "user",
            "add",
            "carol",
            "--password-file",
            password_file.to_str().unwrap(),
            "--data-dir",
            &data,
        ],
    );
    assert!(out.success, "{}", out.stderr);
    let server = start(dir.path());
    server
        .anonymous()
        .login("carol", "carol's long password")
        .expect("an account added while stopped logs in after the start");
}
