//! `bothy cp SRC DST`: one side is `NAME:PATH` (in a sandbox), the other a host path.
//! Files and whole directories (recursively) in both directions; file contents stream.

use std::path::{Path, PathBuf};

use bothy_api::files::{FileType, MkdirRequest};
use bothy_client::Client;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::AsyncWriteExt;

#[derive(clap::Args)]
pub struct Args {
    /// Source: a host path or NAME:PATH.
    pub src: String,
    /// Destination: a host path or NAME:PATH.
    pub dst: String,
}

enum Loc {
    Host(PathBuf),
    Sandbox { name: String, path: String },
}

fn parse(s: &str) -> Loc {
    // NAME:PATH where NAME is a DNS label; anything else (./x, /x, x) is a host path.
    if let Some((name, path)) = s.split_once(':') {
        if bothy_api::name::validate_label(name).is_ok() && !name.is_empty() {
            return Loc::Sandbox {
                name: name.to_string(),
                path: if path.is_empty() {
                    ".".into()
                } else {
                    path.to_string()
                },
            };
        }
    }
    Loc::Host(PathBuf::from(s))
}

pub async fn run(c: &Client, a: Args) -> anyhow::Result<i32> {
    match (parse(&a.src), parse(&a.dst)) {
        (Loc::Host(src), Loc::Sandbox { name, path }) => upload(c, &src, &name, &path).await?,
        (Loc::Sandbox { name, path }, Loc::Host(dst)) => download(c, &name, &path, &dst).await?,
        (Loc::Host(_), Loc::Host(_)) => {
            anyhow::bail!("one side must be in a sandbox: NAME:PATH")
        }
        (Loc::Sandbox { .. }, Loc::Sandbox { .. }) => {
            anyhow::bail!(
                "copying between two sandbox paths is not supported; copy through the host"
            )
        }
    }
    Ok(0)
}

async fn upload(c: &Client, src: &Path, name: &str, dst: &str) -> anyhow::Result<()> {
    let md = tokio::fs::metadata(src)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?;
    // `cp a demo:/dir/` puts a into the directory, as cp(1) does.
    let dst = if dst.ends_with('/')
        || (c.file_exists(name, dst).await?
            && c.stat_file(name, dst).await?.file_type == FileType::Dir)
    {
        format!(
            "{}/{}",
            dst.trim_end_matches('/'),
            src.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        )
    } else {
        dst.to_string()
    };
    if md.is_dir() {
        let mut stack = vec![(src.to_path_buf(), dst)];
        while let Some((dir, remote)) = stack.pop() {
            c.mkdir(
                name,
                &MkdirRequest {
                    path: remote.clone(),
                    mode: None,
                },
            )
            .await?;
            let mut rd = tokio::fs::read_dir(&dir).await?;
            while let Some(e) = rd.next_entry().await? {
                let r = format!("{remote}/{}", e.file_name().to_string_lossy());
                if e.file_type().await?.is_dir() {
                    stack.push((e.path(), r));
                } else if e.file_type().await?.is_file() {
                    upload_file(c, &e.path(), name, &r).await?;
                }
            }
        }
        Ok(())
    } else {
        upload_file(c, src, name, &dst).await
    }
}

async fn upload_file(c: &Client, src: &Path, name: &str, dst: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let f = tokio::fs::File::open(src)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?;
    let mode = f.metadata().await?.permissions().mode() & 0o7777;
    let stream = tokio_util_stream(f).map_ok(Frame::data);
    let body = BodyExt::boxed_unsync(StreamBody::new(stream));
    c.write_file(name, dst, Some(mode), body).await?;
    Ok(())
}

fn tokio_util_stream(
    f: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::try_unfold(f, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            Ok(None)
        } else {
            buf.truncate(n);
            Ok(Some((bytes::Bytes::from(buf), f)))
        }
    })
}

async fn download(c: &Client, name: &str, src: &str, dst: &Path) -> anyhow::Result<()> {
    let st = c.stat_file(name, src).await?;
    let dst = if dst.is_dir() {
        dst.join(&st.name)
    } else {
        dst.to_path_buf()
    };
    if st.file_type == FileType::Dir {
        let list = c.list_files(name, src, true).await?;
        tokio::fs::create_dir_all(&dst).await?;
        for e in list.entries {
            let rel = e
                .path
                .strip_prefix(&st.path)
                .unwrap_or(&e.path)
                .trim_start_matches('/');
            let local = dst.join(rel);
            match e.file_type {
                FileType::Dir => tokio::fs::create_dir_all(&local).await?,
                FileType::File => download_file(c, name, &e.path, &local, e.mode).await?,
                _ => {}
            }
        }
        Ok(())
    } else {
        download_file(c, name, &st.path, &dst, st.mode).await
    }
}

async fn download_file(
    c: &Client,
    name: &str,
    src: &str,
    dst: &Path,
    mode: u32,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = dst.parent() {
        if !parent.as_os_str().is_empty() {
            tokio::fs::create_dir_all(parent).await?;
        }
    }
    let mut body = c.read_file(name, src).await?;
    let mut f = tokio::fs::File::create(dst)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", dst.display()))?;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            f.write_all(&data).await?;
        }
    }
    f.flush().await?;
    tokio::fs::set_permissions(dst, std::fs::Permissions::from_mode(mode & 0o777)).await?;
    Ok(())
}
