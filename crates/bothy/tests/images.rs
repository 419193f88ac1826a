//! End to end: importing a rootfs (directory and tarball) and running sandboxes of it.

use bothy_api::exec::ExecRequest;
use bothy_api::sandbox::{CreateSandbox, ImportImage};
use bothy_api::ErrorCode;
use bothy_testkit::{minimal_rootfs, TestDaemon};

const BIN: &str = env!("CARGO_BIN_EXE_bothy");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_directory_and_tarball() {
    let Some(d) = TestDaemon::start(BIN).await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    minimal_rootfs(&root);
    let info = d
        .client
        .import_image(&ImportImage {
            name: "mini".into(),
            path: root.to_string_lossy().into(),
        })
        .await
        .unwrap();
    assert_eq!(info.kind, "imported");
    let tgz = tmp.path().join("rootfs.tar.gz");
    let st = std::process::Command::new("tar")
        .args([
            "czf",
            tgz.to_str().unwrap(),
            "-C",
            root.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    d.client
        .import_image(&ImportImage {
            name: "mini-tgz".into(),
            path: tgz.to_string_lossy().into(),
        })
        .await
        .unwrap();
    let names: Vec<String> = d
        .client
        .list_images()
        .await
        .unwrap()
        .images
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(
        names.contains(&"host".into())
            && names.contains(&"mini".into())
            && names.contains(&"mini-tgz".into())
    );

    for image in ["mini", "mini-tgz"] {
        let name = format!("img-{}", image.replace('-', ""));
        d.client
            .put_sandbox(
                &name,
                &CreateSandbox {
                    image: Some(image.into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let r = d
            .client
            .exec(
                &name,
                &ExecRequest {
                    argv: Some(vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        "read l < /hello.txt; echo \"$l\"; echo x > /new; read n < /new; echo $n"
                            .into(),
                    ]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(r.stdout, "from the image\nx\n", "{image}: {r:?}");
        // The image has no /usr/bin: the host's tools are not visible.
        let r = d
            .client
            .exec(
                &name,
                &ExecRequest {
                    argv: Some(vec!["/usr/bin/python3".into()]),
                    ..Default::default()
                },
            )
            .await;
        assert!(
            r.is_err(),
            "{image}: host binaries leaked into an imported image"
        );
    }

    // Bad imports.
    let e = d
        .client
        .import_image(&ImportImage {
            name: "Bad".into(),
            path: "/tmp".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidName));
    let e = d
        .client
        .import_image(&ImportImage {
            name: "host".into(),
            path: "/tmp".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Conflict));
    let e = d
        .client
        .import_image(&ImportImage {
            name: "x".into(),
            path: "/no/such/path".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::FileNotFound));
    let e = d
        .client
        .import_image(&ImportImage {
            name: "x".into(),
            path: "relative".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest));
    let junk = tmp.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tarball").unwrap();
    let e = d
        .client
        .import_image(&ImportImage {
            name: "x".into(),
            path: junk.to_string_lossy().into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidRequest));
}
