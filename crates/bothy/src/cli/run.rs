//! `bothy run NAME [--lang L] [--context ID] [FILE|-]`: runs code in a persistent interpreter
//! context of a sandbox. Output streams as it happens; results print as text; images (PNG,
//! JPEG, SVG) are saved to files whose paths are printed on stderr.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use bothy_api::interp::{Language, RichResult, RunEnd, RunError, RunRequest, RunStart, RunStatus};
use bothy_api::{ApiError, Data, Encoding};
use bothy_client::Client;

#[derive(clap::Args)]
pub struct Args {
    /// Sandbox name.
    pub name: String,
    /// Language: python, javascript (js) or typescript (ts). Default: from the file's
    /// extension, else python. Without --context the language's default context is used.
    #[arg(long = "lang", short = 'l')]
    pub language: Option<String>,
    /// Run in this context (see the API's /contexts) instead of the language's default one.
    #[arg(long)]
    pub context: Option<String>,
    /// Code to run (instead of FILE).
    #[arg(long = "code", short = 'c', conflicts_with = "file")]
    pub code: Option<String>,
    /// Interrupt the code after this many seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Directory for images from results (default: the current directory).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Print the whole result as JSON at the end instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// File with the code; `-` or nothing reads standard input.
    pub file: Option<String>,
}

fn read_code(a: &Args) -> anyhow::Result<String> {
    if let Some(c) = &a.code {
        return Ok(c.clone());
    }
    match a.file.as_deref() {
        Some(f) if f != "-" => {
            std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("cannot read {f}: {e}"))
        }
        _ => {
            if std::io::stdin().is_terminal() {
                anyhow::bail!("nothing to run: give a FILE, `-c CODE`, or pipe code on stdin");
            }
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            Ok(s)
        }
    }
}

/// Saves images of results and prints their text.
struct Printer {
    out_dir: PathBuf,
    images: usize,
}

impl Printer {
    fn save(&mut self, count: u64, ext: &str, bytes: &[u8]) -> anyhow::Result<()> {
        self.images += 1;
        std::fs::create_dir_all(&self.out_dir)?;
        let path = self
            .out_dir
            .join(format!("bothy-run-{count}-{}.{ext}", self.images));
        std::fs::write(&path, bytes)
            .map_err(|e| anyhow::anyhow!("cannot save {}: {e}", path.display()))?;
        eprintln!("[{ext} image saved to {}]", path.display());
        Ok(())
    }

    fn result(&mut self, count: u64, r: &RichResult) -> anyhow::Result<()> {
        let b64 = |s: &str| {
            Data {
                data: s.to_string(),
                encoding: Encoding::Base64,
            }
            .decode()
            .map_err(|e| anyhow::anyhow!("bad image data: {e}"))
        };
        let mut image = false;
        if let Some(p) = &r.png {
            self.save(count, "png", &b64(p)?)?;
            image = true;
        }
        if let Some(j) = &r.jpeg {
            self.save(count, "jpg", &b64(j)?)?;
            image = true;
        }
        if let Some(s) = &r.svg {
            self.save(count, "svg", s.as_bytes())?;
            image = true;
        }
        // The text of a figure ("<Figure size 640x480 with 1 Axes>") adds nothing to its file.
        if !image {
            if let Some(t) = r.text.as_deref().or(r.markdown.as_deref()) {
                println!("{t}");
            } else if let Some(j) = &r.json {
                println!("{j}");
            }
        }
        Ok(())
    }
}

fn write_data(d: &Data, to_stderr: bool) -> anyhow::Result<()> {
    let bytes = d
        .decode()
        .map_err(|e| anyhow::anyhow!("bad output chunk: {e}"))?;
    if to_stderr {
        let mut e = std::io::stderr();
        e.write_all(&bytes)?;
        e.flush()?;
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(&bytes)?;
        o.flush()?;
    }
    Ok(())
}

fn print_error(e: &RunError) {
    if e.traceback.is_empty() {
        eprintln!("{}: {}", e.name, e.value);
    } else {
        eprint!("{}", e.traceback);
        if e.name == "TimeoutError" {
            eprintln!("{}: {}", e.name, e.value);
        }
    }
    if e.restarted {
        eprintln!("bothy: the context was restarted; its state is lost");
    }
}

fn exit_code(status: RunStatus) -> i32 {
    match status {
        RunStatus::Ok => 0,
        RunStatus::Error | RunStatus::Crashed => 1,
        RunStatus::Timeout => 124,
        RunStatus::Interrupted => 130,
    }
}

pub async fn run(c: &Client, a: Args) -> anyhow::Result<i32> {
    let code = read_code(&a)?;
    let language = match a.language.as_deref() {
        Some(l) => Some(Language::parse(l).ok_or_else(|| {
            anyhow::anyhow!("unknown language {l:?}: use python, javascript or typescript")
        })?),
        None => a.file.as_deref().and_then(Language::from_extension),
    };
    let req = RunRequest {
        code,
        language,
        context: a.context.clone(),
        timeout_ms: a.timeout.map(|s| (s * 1000.0).max(1.0) as u64),
    };
    let mut printer = Printer {
        out_dir: a.out_dir.clone().unwrap_or_else(|| PathBuf::from(".")),
        images: 0,
    };
    if a.json {
        let r = c.run_code(&a.name, &req).await?;
        super::output::print_json(&r);
        return Ok(exit_code(r.status));
    }
    let mut stream = c.run_code_stream(&a.name, &req).await?;
    let mut count = 0;
    while let Some(ev) = stream.next().await? {
        match ev.event.as_str() {
            "start" => {
                let s: RunStart = ev.json()?;
                count = s.execution_count;
                if s.fresh && s.execution_count == 1 && a.context.is_some() {
                    eprintln!("bothy: started a fresh {} interpreter", s.language);
                }
            }
            "stdout" => write_data(&ev.json()?, false)?,
            "stderr" => write_data(&ev.json()?, true)?,
            "result" => printer.result(count, &ev.json()?)?,
            "error" => {
                // A run error has a name; an API error in the stream has a code.
                if let Ok(e) = ev.json::<RunError>() {
                    print_error(&e);
                } else {
                    let e: ApiError = ev.json()?;
                    anyhow::bail!("{}: {}", e.code.as_str(), e.message);
                }
            }
            "end" => {
                let e: RunEnd = ev.json()?;
                return Ok(exit_code(e.status));
            }
            _ => {}
        }
    }
    anyhow::bail!("the stream ended before the run's end was reported")
}
