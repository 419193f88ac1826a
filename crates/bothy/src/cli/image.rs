//! `bothy image ls|import`.

use bothy_api::sandbox::ImportImage;
use bothy_client::Client;

use super::output::{bytes, print_json, print_table, JsonFlag};

#[derive(clap::Subcommand)]
pub enum Command {
    /// List images.
    Ls(JsonFlag),
    /// Import a rootfs (a directory or a .tar/.tar.gz) as image NAME.
    Import {
        name: String,
        path: std::path::PathBuf,
        #[command(flatten)]
        out: JsonFlag,
    },
}

pub async fn run(c: &Client, cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Ls(out) => {
            let list = c.list_images().await?;
            if out.json {
                print_json(&list);
            } else {
                let rows: Vec<Vec<String>> = list
                    .images
                    .iter()
                    .map(|i| {
                        vec![
                            i.name.clone(),
                            i.kind.clone(),
                            bytes(i.size_bytes),
                            i.layers.join(","),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "KIND", "SIZE", "LAYERS"], &rows);
            }
        }
        Command::Import { name, path, out } => {
            // The daemon reads the path: make it absolute here.
            let path = std::path::absolute(&path)?;
            eprintln!("importing {} as {name} …", path.display());
            let info = c
                .import_image(&ImportImage {
                    name,
                    path: path.to_string_lossy().into_owned(),
                })
                .await?;
            if out.json {
                print_json(&info);
            } else {
                println!("{} imported ({})", info.name, bytes(info.size_bytes));
            }
        }
    }
    Ok(0)
}
