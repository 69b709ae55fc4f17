//! `sg-agent generate` (hidden; for packaging): man pages and shell
//! completions made from the command line's own definition, so they list
//! exactly the commands, flags and `SG_AGENT_…` variables this binary takes.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Command;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Write man pages into DIR: sg-agent.1, and one per command, nested
    /// ones included (sg-agent-run.1, sg-agent-group-create.1, …).
    Man {
        /// Where to write them (made if missing).
        dir: PathBuf,
    },
    /// Print the completion script for SHELL, or write it into DIR under
    /// the file name that shell's convention gives it.
    Completions {
        shell: Shell,
        /// Where to write it, instead of standard output.
        dir: Option<PathBuf>,
    },
}

/// Generates what `args` asks for from `command`, the whole CLI.
pub fn run(args: &Args, command: Command) -> anyhow::Result<()> {
    match &args.what {
        What::Man { dir } => man(command, dir),
        What::Completions { shell, dir } => {
            let mut command = command;
            let name = command.get_name().to_owned();
            match dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    let path = clap_complete::generate_to(*shell, &mut command, name, dir)
                        .with_context(|| format!("writing into {}", dir.display()))?;
                    println!("{}", path.display());
                }
                None => {
                    clap_complete::generate(*shell, &mut command, name, &mut std::io::stdout());
                }
            }
            Ok(())
        }
    }
}

/// One page per command that is not hidden, named after its path of
/// commands (`sg-agent-group-create.1`); each lists the page's flags with
/// their variables, and its subcommands.
fn man(command: Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let source = format!(
        "{} {}",
        command.get_name(),
        command.get_version().unwrap_or_default()
    );
    // Built, a subcommand's display name is its path (`sg-agent-run`).
    let mut command = command.disable_help_subcommand(true);
    command.build();
    pages(&command, dir, &source)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    println!("{}", dir.display());
    Ok(())
}

fn pages(command: &Command, dir: &Path, source: &str) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        pages(sub, dir, source)?;
    }
    clap_mangen::Man::new(command.clone())
        .source(source)
        .manual("sg-agent manual")
        .generate_to(dir)?;
    Ok(())
}
