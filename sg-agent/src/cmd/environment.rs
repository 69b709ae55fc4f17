//! Flags read from the environment (`SG_AGENT_…`, clap's `env`): a value
//! clap refuses there is reported with the flag's name, which the operator
//! did not type; the error then names the variable it came from as well.

use std::ffi::OsString;

use clap::{
    Command,
    error::{ContextKind, ContextValue},
};

/// `error` with a tip naming the environment variable the refused value came
/// from, when it came from one (the flag is not on the command line, and its
/// variable is set).
pub fn explain(mut error: clap::Error, command: &Command, argv: &[OsString]) -> clap::Error {
    let Some(ContextValue::String(invalid)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let Some(variable) = source(invalid, command, argv, |v| std::env::var_os(v)) else {
        return error;
    };
    let tip = format!("the value comes from the environment variable {variable}");
    error.insert(
        ContextKind::Suggested,
        ContextValue::StyledStrs(vec![tip.into()]),
    );
    error
}

/// The variable that gave the value of `invalid` (clap's rendering of the
/// flag, `--max-nics <MAX_NICS>`): the flag's `env`, when `argv` does not
/// hold the flag and `lookup` finds the variable set.
fn source(
    invalid: &str,
    command: &Command,
    argv: &[OsString],
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Option<String> {
    let long = invalid.split_whitespace().next()?.strip_prefix("--")?;
    let variable = env_of(command, long)?;
    let flag = format!("--{long}");
    let typed = argv.iter().filter_map(|a| a.to_str()).any(|a| {
        a == flag
            || a.strip_prefix(flag.as_str())
                .is_some_and(|rest| rest.starts_with('='))
    });
    (!typed && lookup(&variable).is_some()).then_some(variable)
}

/// The `env` of the flag `--long` in `command` or any of its subcommands.
fn env_of(command: &Command, long: &str) -> Option<String> {
    command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .or_else(|| command.get_subcommands().find_map(|sub| env_of(sub, long)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> Command {
        Command::new("sg-agent").subcommand(
            Command::new("run").arg(
                clap::Arg::new("max_nics")
                    .long("max-nics")
                    .env("SG_AGENT_MAX_NICS"),
            ),
        )
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_value_from_the_environment_names_its_variable() {
        let set = |_: &str| Some(OsString::from("lots"));
        let found = source(
            "--max-nics <MAX_NICS>",
            &command(),
            &argv(&["sg-agent", "run"]),
            set,
        );
        assert_eq!(found.as_deref(), Some("SG_AGENT_MAX_NICS"));
    }

    #[test]
    fn a_value_typed_on_the_command_line_does_not() {
        let set = |_: &str| Some(OsString::from("lots"));
        for typed in [&["run", "--max-nics", "x"][..], &["run", "--max-nics=x"]] {
            assert_eq!(
                source("--max-nics <MAX_NICS>", &command(), &argv(typed), set),
                None
            );
        }
        // Nor when the variable is not set, nor for a flag with no `env`.
        let unset = |_: &str| None;
        assert_eq!(
            source("--max-nics <N>", &command(), &argv(&["run"]), unset),
            None
        );
        assert_eq!(
            source("--other <X>", &command(), &argv(&["run"]), set),
            None
        );
    }
}
