//! `sg-agent status`: the daemon's own state (version, process, socket,
//! store, NICs attached, programs loaded).

use std::path::Path;

use serde_json::Value;
use sg_agent::api::Request;

use super::client::{self, Output};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    out: Output,
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let answer = client::request(socket, &Request::Status)?;
    args.out.show(answer, |status: Value| {
        client::fields(&client::flatten(&status))
    })
}
