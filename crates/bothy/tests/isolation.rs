//! Isolation probes, run from *inside* sandboxes through the public API: a sandbox cannot see or
//! touch the host, another sandbox or the daemon, and cannot take the machine down.

use std::time::Duration;

use bothy_api::exec::ExecRequest;
use bothy_api::sandbox::CreateSandbox;
use bothy_testkit::{sh_fails, sh_status, Options, TestDaemon};

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cannot_see_or_touch_the_host() {
    let opts = Options {
        tcp_token: Some("tok".into()),
        ..Default::default()
    };
    let Some(d) = TestDaemon::start_with(BIN, opts).await else {
        return;
    };
    // Network mode `none`: this test checks the loopback-only sandbox (proxy mode has its own
    // probes in tests/network.rs).
    let spec = CreateSandbox {
        network: Some(bothy_api::network::NetworkConfig {
            mode: bothy_api::network::NetworkMode::None,
            ..Default::default()
        }),
        ..Default::default()
    };
    d.client.put_sandbox("probe", &spec).await.unwrap();
    let port = d
        .tcp_addr
        .clone()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();

    // Identity: root inside, an unprivileged uid outside.
    assert_eq!(
        sh_status(&d.client, "probe", "id -u; hostname").await,
        (0, "0\nprobe\n".into())
    );
    assert_eq!(
        sh_status(&d.client, "probe", "grep NoNewPrivs /proc/self/status")
            .await
            .1
            .split_whitespace()
            .last(),
        Some("1")
    );
    sh_status(&d.client, "probe", "touch /workspace/owned").await;
    let meta = std::fs::metadata(
        d.data_dir()
            .join("sandboxes/probe/disk/root/upper/workspace/owned"),
    )
    .unwrap();
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.uid() >= 100_000,
        "sandbox root is an unprivileged uid on the host, got {}",
        meta.uid()
    );

    // Processes: only the sandbox's own.
    let (_, pids) = sh_status(&d.client, "probe", "ls /proc | grep -c '^[0-9]'").await;
    assert!(
        pids.trim().parse::<u32>().unwrap() < 10,
        "sees host processes: {pids}"
    );
    let (_, cmdlines) = sh_status(
        &d.client,
        "probe",
        "cat /proc/[0-9]*/cmdline | tr '\\0' ' '",
    )
    .await;
    assert!(!cmdlines.contains("serve"), "sees the daemon: {cmdlines}");

    // Files: none of the host's beyond the image.
    for path in [
        "/work",
        "/root/.cargo",
        "/etc/shadow",
        "/var/lib/bothy",
        d.data_dir().to_str().unwrap(),
        "/tmp/bothy-test-x",
    ] {
        sh_fails(&d.client, "probe", &format!("ls -d {path}")).await;
    }
    let (_, etc) = sh_status(&d.client, "probe", "ls /etc").await;
    for secret in ["shadow", "gshadow", "sudoers", "gitconfig", "npmrc"] {
        assert!(
            !etc.split_whitespace().any(|e| e == secret),
            "/etc/{secret} leaked"
        );
    }

    // Network: loopback only; the daemon's TCP port and the outside are unreachable.
    let (_, ifaces) = sh_status(
        &d.client,
        "probe",
        "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '",
    )
    .await;
    assert_eq!(ifaces.trim(), "lo");
    sh_fails(
        &d.client,
        "probe",
        &format!("timeout 3 bash -c 'echo > /dev/tcp/127.0.0.1/{port}'"),
    )
    .await;
    sh_fails(
        &d.client,
        "probe",
        "timeout 3 bash -c 'echo > /dev/tcp/1.1.1.1/53'",
    )
    .await;
    sh_fails(
        &d.client,
        "probe",
        "timeout 3 bash -c 'echo > /dev/tcp/10.0.0.1/80'",
    )
    .await;

    // Privileged operations.
    sh_fails(&d.client, "probe", "mount -t tmpfs none /mnt").await;
    sh_fails(&d.client, "probe", "umount /proc").await;
    sh_fails(&d.client, "probe", "mount -o remount,rw /sys").await;
    sh_fails(&d.client, "probe", "mknod /tmp/sda b 8 0").await;
    sh_fails(&d.client, "probe", "mknod /tmp/mem c 1 1").await;
    sh_fails(&d.client, "probe", "echo 1 > /proc/sys/kernel/sysrq").await;
    sh_fails(&d.client, "probe", "echo h > /proc/sysrq-trigger").await;
    sh_fails(&d.client, "probe", "echo x > /sys/kernel/uevent_helper").await;
    sh_fails(&d.client, "probe", "hostname evil").await;
    // Loading a kernel module: finit_module(2) must fail (EPERM; ENOSYS on kernels built
    // without module support, like this machine kind's).
    let (_, errno) = sh_status(
        &d.client,
        "probe",
        "python3 -c 'import ctypes,os; l=ctypes.CDLL(None,use_errno=True); r=l.syscall(313,0,b\"\",0); print(os.strerror(ctypes.get_errno()))'",
    )
    .await;
    assert!(
        errno.contains("Operation not permitted") || errno.contains("Function not implemented"),
        "finit_module: {errno}"
    );
    // The agent binary (the host's bothy, bind-mounted) cannot be modified (CVE-2019-5736).
    sh_fails(&d.client, "probe", "echo x >> /run/bothy/bothy").await;
    sh_fails(&d.client, "probe", "echo x >> /proc/1/exe").await;
    // The host's devices are not reachable through /dev.
    let (_, devs) = sh_status(&d.client, "probe", "ls /dev").await;
    assert!(
        !devs.contains("vda") && !devs.contains("sda") && !devs.contains("kvm"),
        "{devs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_cannot_see_each_other() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("a", &CreateSandbox::default())
        .await
        .unwrap();
    d.client
        .put_sandbox("b", &CreateSandbox::default())
        .await
        .unwrap();
    sh_status(&d.client, "a", "echo mine > /workspace/a-only; nohup sleep 1000 >/dev/null 2>&1 & python3 -m http.server 8111 >/dev/null 2>&1 &").await;
    // Wait until the server listens in `a` before probing from `b`.
    assert!(
        bothy_testkit::wait_until(Duration::from_secs(10), || async {
            sh_status(&d.client, "a", "grep -q ':1FAF ' /proc/net/tcp")
                .await
                .0
                == 0
        })
        .await
    );
    sh_fails(&d.client, "b", "cat /workspace/a-only").await;
    let (_, ps) = sh_status(&d.client, "b", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '").await;
    assert!(
        !ps.contains("sleep 1000") && !ps.contains("http.server"),
        "{ps}"
    );
    sh_fails(
        &d.client,
        "b",
        "timeout 3 bash -c 'echo > /dev/tcp/127.0.0.1/8111'",
    )
    .await;
    // …while the server is reachable inside its own sandbox.
    let reachable = bothy_testkit::wait_until(Duration::from_secs(10), || async {
        sh_status(
            &d.client,
            "a",
            "timeout 3 bash -c 'echo > /dev/tcp/127.0.0.1/8111'",
        )
        .await
        .0 == 0
    })
    .await;
    assert!(reachable, "the server is reachable inside its own sandbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bombs_stay_inside_their_sandbox() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    d.client
        .put_sandbox("bomb", &CreateSandbox::default())
        .await
        .unwrap();
    d.client
        .put_sandbox("calm", &CreateSandbox::default())
        .await
        .unwrap();

    // Fork bomb: capped by the sandbox's pids limit, killed by the timeout.
    let c = d.client.clone();
    let fork = tokio::spawn(async move {
        c.exec(
            "bomb",
            // The root (bash, which survives a failed fork where dash exits) spins without
            // forking, so only the timeout ends it, and with it the whole tree.
            &ExecRequest {
                argv: Some(vec![
                    "bash".into(),
                    "-c".into(),
                    "bomb() { bomb | bomb & }; bomb; while :; do :; done".into(),
                ]),
                timeout_ms: Some(4000),
                ..Default::default()
            },
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, out) = sh_status(&d.client, "calm", "echo still serving").await;
    assert_eq!(
        (code, out.as_str()),
        (0, "still serving\n"),
        "another sandbox keeps serving during a fork bomb"
    );
    let r = fork.await.unwrap().expect("the bomb's exec returns");
    assert!(r.timed_out, "exit {:?} signal {:?}", r.exit_code, r.signal);

    // Memory bomb: the sandbox's memory limit kills it, not the machine.
    let r = d
        .client
        .exec(
            "bomb",
            &ExecRequest {
                argv: Some(vec![
                    "python3".into(),
                    "-c".into(),
                    "a=[]\nwhile True: a.append(bytearray(64<<20))".into(),
                ]),
                timeout_ms: Some(60_000),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        r.signal,
        Some(9),
        "OOM-killed: exit {:?}, stderr {:?}",
        r.exit_code,
        &r.stderr[..r.stderr.len().min(300)]
    );
    let (code, _) = sh_status(&d.client, "calm", "true").await;
    assert_eq!(code, 0);
    // The bomb's sandbox itself recovers (or is woken again on the next request).
    let (code, out) = sh_status(&d.client, "bomb", "echo recovered").await;
    assert_eq!((code, out.as_str()), (0, "recovered\n"));
}
