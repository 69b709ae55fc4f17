//! `sg-agent apply`: set the whole desired state from a YAML or JSON
//! document, all or nothing.

use std::path::{Path, PathBuf};

use sg_agent::api::{Request, StateRequest};

use sg_agent::api::reply;

use super::client::{self, Output};

#[derive(clap::Args)]
pub struct Args {
    /// The document (YAML or JSON); `-` reads standard input.
    #[arg(long = "file", short = 'f', value_name = "FILE")]
    file: PathBuf,
    /// Only say what would change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Allow an apply that unbinds every NIC or deletes every security
    /// group (refused without it: an unbound NIC passes every packet).
    #[arg(long)]
    allow_delete_all: bool,
    #[command(flatten)]
    out: Output,
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let request = Request::State(StateRequest::Apply {
        document: client::read_input(&args.file)?,
        dry_run: args.dry_run,
        allow_delete_all: args.allow_delete_all,
    });
    let answer = client::request(socket, &request)?;
    args.out.show(answer, |r: reply::Applied| {
        if r.changes.is_empty() {
            return "no changes\n".to_owned();
        }
        let mut text = client::lines(&r.changes);
        if !r.applied {
            text.push_str("(dry run: nothing changed)\n");
            if !r.warnings.is_empty() {
                text.push_str("(applying this needs --allow-delete-all)\n");
            }
        }
        text
    })
}
