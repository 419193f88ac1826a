//! End to end: get-or-create, sleep/wake, persistence, daemon restarts, idle sleep, destroy.

use std::time::Duration;

use bothy_api::exec::ExecRequest;
use bothy_api::sandbox::{CreateSandbox, SandboxState};
use bothy_api::ErrorCode;
use bothy_testkit::{sh_ok, wait_until, Options, TestDaemon};

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

fn sh(cmd: &str) -> ExecRequest {
    ExecRequest {
        shell: Some(cmd.into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_or_create_is_idempotent_and_concurrent_safe() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let first = d
        .client
        .put_sandbox("one", &CreateSandbox::default())
        .await
        .unwrap();
    assert_eq!(first.created, Some(true));
    assert_eq!(first.state, SandboxState::Running);
    let again = d
        .client
        .put_sandbox("one", &CreateSandbox::default())
        .await
        .unwrap();
    assert_eq!(again.created, Some(false));

    // 16 concurrent get-or-creates of one new name create exactly one sandbox.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let c = d.client.clone();
        tasks.push(tokio::spawn(async move {
            c.put_sandbox("racy", &CreateSandbox::default())
                .await
                .unwrap()
        }));
    }
    let mut created = 0;
    let mut pids = std::collections::HashSet::new();
    for t in tasks {
        let info = t.await.unwrap();
        created += (info.created == Some(true)) as usize;
        pids.insert(info.pid);
    }
    assert_eq!(created, 1, "exactly one call creates");
    assert_eq!(pids.len(), 1, "every caller sees the same sandbox");

    let list = d.client.list_sandboxes().await.unwrap();
    let names: Vec<_> = list.sandboxes.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["one", "racy"]);
    let info = d.client.get_sandbox("one").await.unwrap();
    assert_eq!(info.image, "host");
    assert!(info.disk_used_bytes.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_wake_and_persistence() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("p", &CreateSandbox::default())
        .await
        .unwrap();
    sh_ok(&d.client, "p", "echo kept > /workspace/f && mkdir -p /root/x && echo y > /root/x/y && echo tmp > /tmp/t && head -c 1000000 /dev/urandom > /workspace/big && sha256sum /workspace/big > /workspace/big.sum").await;
    let slept = d.client.sleep_sandbox("p").await.unwrap();
    assert_eq!(slept.state, SandboxState::Sleeping);
    assert_eq!(
        d.client.get_sandbox("p").await.unwrap().state,
        SandboxState::Sleeping
    );
    // Any request wakes it transparently.
    let out = sh_ok(&d.client, "p", "cat /workspace/f /root/x/y /tmp/t && sha256sum -c /workspace/big.sum >/dev/null && echo sum-ok").await;
    assert_eq!(out, "kept\ny\ntmp\nsum-ok\n");
    assert_eq!(
        d.client.get_sandbox("p").await.unwrap().state,
        SandboxState::Running
    );
    // Explicit wake of a running sandbox is a no-op; sleep twice is fine.
    d.client.wake_sandbox("p").await.unwrap();
    d.client.sleep_sandbox("p").await.unwrap();
    d.client.sleep_sandbox("p").await.unwrap();
    let woken = d.client.wake_sandbox("p").await.unwrap();
    assert_eq!(woken.state, SandboxState::Running);
    assert_eq!(sh_ok(&d.client, "p", "cat /workspace/f").await, "kept\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_daemon_kill9_and_graceful_restart() {
    let Some(mut d) = TestDaemon::start(BIN).await else {
        return;
    };
    let info = d
        .client
        .put_sandbox("k", &CreateSandbox::default())
        .await
        .unwrap();
    // A process that must keep running across the daemon's death.
    sh_ok(&d.client, "k", "nohup sh -c 'while true; do date +%s%N >> /workspace/ticks; sleep 0.05; done' >/dev/null 2>&1 &").await;
    sh_ok(&d.client, "k", "echo before > /workspace/before").await;

    d.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.restart().await;
    let after = d.client.get_sandbox("k").await.unwrap();
    assert_eq!(after.state, SandboxState::Running);
    assert_eq!(after.pid, info.pid, "same sandbox init, re-attached");
    let ticks1 = sh_ok(&d.client, "k", "wc -l < /workspace/ticks").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ticks2 = sh_ok(&d.client, "k", "wc -l < /workspace/ticks").await;
    assert!(
        ticks2.trim().parse::<u64>().unwrap() > ticks1.trim().parse::<u64>().unwrap(),
        "the background loop kept running through the restart"
    );
    assert_eq!(
        sh_ok(&d.client, "k", "cat /workspace/before").await,
        "before\n"
    );

    // SIGTERM: graceful exit, sandboxes untouched.
    assert_eq!(
        d.terminate(),
        Some(0),
        "graceful shutdown exits 0:\n{}",
        d.log()
    );
    d.restart().await;
    assert_eq!(d.client.get_sandbox("k").await.unwrap().pid, info.pid);

    // A sandbox asleep at the restart stays asleep and wakes on demand.
    d.client.sleep_sandbox("k").await.unwrap();
    d.restart().await;
    assert_eq!(
        d.client.get_sandbox("k").await.unwrap().state,
        SandboxState::Sleeping
    );
    assert_eq!(
        sh_ok(&d.client, "k", "cat /workspace/before").await,
        "before\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sandboxes_sleep_but_work_in_progress_keeps_them_awake() {
    let Some(d) = TestDaemon::start_with(
        BIN,
        Options {
            idle_check_ms: 100,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let spec = CreateSandbox {
        sleep_after: Some(1),
        ..Default::default()
    };
    d.client.put_sandbox("idle", &spec).await.unwrap();
    d.client.put_sandbox("busy", &spec).await.unwrap();
    d.client
        .put_sandbox(
            "pinned",
            &CreateSandbox {
                sleep_after: Some(1),
                keep_alive: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // A 3-second exec in `busy` (no other request arrives meanwhile) keeps it awake.
    let c = d.client.clone();
    let long = tokio::spawn(async move { c.exec("busy", &sh("sleep 3; echo done")).await });
    let c = d.client.clone();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let c = c.clone();
            async move { c.get_sandbox("idle").await.unwrap().state == SandboxState::Sleeping }
        })
        .await,
        "idle sandbox falls asleep after sleep_after"
    );
    assert_eq!(
        d.client.get_sandbox("busy").await.unwrap().state,
        SandboxState::Running
    );
    let r = long.await.unwrap().unwrap();
    assert_eq!(
        r.stdout_bytes(),
        b"done\n",
        "the long exec was not cut by sleep"
    );
    assert_eq!(
        d.client.get_sandbox("pinned").await.unwrap().state,
        SandboxState::Running
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_env_and_settings_update() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let spec = CreateSandbox {
        env: Some([("GREETING".to_string(), "hi".to_string())].into()),
        ..Default::default()
    };
    d.client.put_sandbox("env", &spec).await.unwrap();
    assert_eq!(sh_ok(&d.client, "env", "echo $GREETING").await, "hi\n");
    let mut req = sh("echo $GREETING $EXTRA");
    req.env.insert("EXTRA".into(), "there".into());
    let r = d.client.exec("env", &req).await.unwrap();
    assert_eq!(r.stdout_bytes(), b"hi there\n");
    // Updating the env of a running sandbox applies to the next command.
    let spec = CreateSandbox {
        env: Some([("GREETING".to_string(), "hello".to_string())].into()),
        ..Default::default()
    };
    d.client.put_sandbox("env", &spec).await.unwrap();
    assert_eq!(sh_ok(&d.client, "env", "echo $GREETING").await, "hello\n");
    // …and survives sleep.
    d.client.sleep_sandbox("env").await.unwrap();
    assert_eq!(sh_ok(&d.client, "env", "echo $GREETING").await, "hello\n");
    // Changing the image of an existing sandbox is refused.
    let err = d
        .client
        .put_sandbox(
            "env",
            &CreateSandbox {
                image: Some("other".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_removes_everything() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("gone", &CreateSandbox::default())
        .await
        .unwrap();
    sh_ok(&d.client, "gone", "echo secret > /workspace/s").await;
    d.client.delete_sandbox("gone").await.unwrap();
    let err = d.client.get_sandbox("gone").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SandboxNotFound));
    let err = d.client.exec("gone", &sh("true")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SandboxNotFound));
    assert!(!d.data_dir().join("sandboxes/gone").exists());
    // Same name again: a fresh, empty sandbox.
    d.client
        .put_sandbox("gone", &CreateSandbox::default())
        .await
        .unwrap();
    let r = d
        .client
        .exec("gone", &sh("cat /workspace/s"))
        .await
        .unwrap();
    assert_ne!(r.exit_code, Some(0));
    assert_eq!(
        d.client.delete_sandbox("nope").await.unwrap_err().code(),
        Some(ErrorCode::SandboxNotFound)
    );
}
