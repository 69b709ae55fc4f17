//! `sg-agent export`: the whole state as an `apply` document (JSON).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sg_agent::api::{Request, StateRequest};

use super::client;

#[derive(clap::Args)]
pub struct Args {
    /// Write the document to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let document = client::request(socket, &Request::State(StateRequest::Export))?;
    match &args.output {
        Some(path) => {
            let mut text = serde_json::to_string_pretty(&document)?;
            text.push('\n');
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
            Ok(())
        }
        None => client::print_json(&document),
    }
}
