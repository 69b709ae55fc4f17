//! `sg-agent rule`: add, remove, modify, list, import and export the rules
//! of a security group; list a NIC's merged rules.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use sg_agent::api::{Request, RuleRequest, RuleText};
use sg_policy::{PortSpec, Rule};

use sg_agent::api::reply;

use super::client::{self, Output, Table};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
    #[command(flatten)]
    out: Output,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// Add rules to a group, all or none; prints the new rules' ids.
    Add {
        /// The group (`sg-…`).
        group: String,
        #[command(flatten)]
        rule: Fields,
        /// Add several rules at once from a JSON array of rules whose fields
        /// are the flags' names (`direction`, `policy`, `priority`,
        /// `protocol`, `port_range`, `peer`, `source_port_range`, `local`,
        /// `description`); `-` reads standard input.
        #[arg(long, short = 'f', value_name = "FILE", conflicts_with_all = Fields::NAMES)]
        file: Option<PathBuf>,
    },
    /// Remove rules from a group, all or none.
    Remove {
        /// The group (`sg-…`).
        group: String,
        /// The rules (`sgr-…`).
        #[arg(required = true)]
        rules: Vec<String>,
    },
    /// Replace a rule's fields, keeping its id and its place.
    Modify {
        /// The group (`sg-…`).
        group: String,
        /// The rule (`sgr-…`).
        rule: String,
        #[command(flatten)]
        fields: Fields,
    },
    /// List a group's rules, or the merged and sorted rules of a NIC.
    List {
        /// The group (`sg-…`).
        #[arg(long, required_unless_present = "nic", conflicts_with = "nic")]
        group: Option<String>,
        /// The NIC (interface name): its groups' rules in the order they are
        /// decided.
        #[arg(long)]
        nic: Option<String>,
    },
    /// Import rules into a group from the documents' JSON or CSV (at most
    /// 200 at a time); rules that cannot be imported are listed with why.
    Import {
        /// The group (`sg-…`).
        group: String,
        /// The file to import; `-` reads standard input.
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
        /// `json` or `csv` (default: `csv` for a file named `*.csv`, else `json`).
        #[arg(long)]
        format: Option<String>,
    },
    /// Export a group's rules as the documents' JSON or CSV (to standard
    /// output unless --output or --save).
    Export {
        /// The group (`sg-…`).
        group: String,
        /// `json` or `csv`.
        #[arg(long, default_value = "json")]
        format: String,
        /// The region named in the exported file's name.
        #[arg(long)]
        region: Option<String>,
        /// Write the export to this file.
        #[arg(long, short = 'o', value_name = "FILE", conflicts_with = "save")]
        output: Option<PathBuf>,
        /// Write the export to the file name the documents give it, in the
        /// current directory.
        #[arg(long)]
        save: bool,
    },
}

/// A rule's fields as typed (SPEC §1's rule table); the daemon parses them.
#[derive(clap::Args)]
struct Fields {
    /// `ingress` or `egress`.
    #[arg(long)]
    direction: Option<String>,
    /// `Accept` (default) or `Drop`.
    #[arg(long, visible_alias = "action")]
    policy: Option<String>,
    /// 1 (default, strongest) to 100.
    #[arg(long)]
    priority: Option<String>,
    /// `TCP`, `UDP`, `ICMP`, `ICMPv6`, `GRE`, `ALL` or a protocol number.
    #[arg(long)]
    protocol: Option<String>,
    /// Destination ports: `a/b`, `-1/-1` (default; any) or a port list id
    /// (`prl-…`).
    #[arg(long, allow_hyphen_values = true)]
    port_range: Option<String>,
    /// The peer: a CIDR or address, a group id (`sg-…`) or a prefix list id
    /// (`pl-…`).
    #[arg(long)]
    peer: Option<String>,
    /// Source ports `a/b` of the packet (default: any).
    #[arg(long, allow_hyphen_values = true)]
    source_port_range: Option<String>,
    /// The NIC's side: ingress destination or egress source, as a CIDR
    /// (default: any).
    #[arg(long)]
    local: Option<String>,
    /// What the rule is for.
    #[arg(long)]
    description: Option<String>,
}

impl Fields {
    const NAMES: [&str; 9] = [
        "direction",
        "policy",
        "priority",
        "protocol",
        "port_range",
        "peer",
        "source_port_range",
        "local",
        "description",
    ];

    /// The rule as the API carries it; `--direction`, `--protocol` and
    /// `--peer` are required.
    fn text(&self) -> anyhow::Result<RuleText> {
        let missing: Vec<&str> = [
            ("--direction", &self.direction),
            ("--protocol", &self.protocol),
            ("--peer", &self.peer),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| n)
        .collect();
        if !missing.is_empty() {
            bail!("missing {}", missing.join(", "));
        }
        Ok(RuleText {
            direction: self.direction.clone().unwrap_or_default(),
            policy: self.policy.clone(),
            priority: self.priority.clone(),
            protocol: self.protocol.clone().unwrap_or_default(),
            port_range: self.port_range.clone(),
            peer: self.peer.clone().unwrap_or_default(),
            source_port_range: self.source_port_range.clone(),
            local: self.local.clone(),
            description: self.description.clone(),
        })
    }
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let out = &args.out;
    match &args.verb {
        Verb::Add { group, rule, file } => {
            let rules = match file {
                Some(path) => {
                    let text = client::read_input(path)?;
                    serde_json::from_str(&text).with_context(|| {
                        format!("{}: expected a JSON array of rules", path.display())
                    })?
                }
                None => vec![
                    rule.text()
                        .context("rule add needs --file, or --direction, --protocol and --peer")?,
                ],
            };
            let request = Request::Rule(RuleRequest::Authorize {
                group: group.clone(),
                rules,
            });
            out.show(client::request(socket, &request)?, |r: reply::RuleIds| {
                client::lines(&r.ids)
            })
        }
        Verb::Remove { group, rules } => {
            let request = Request::Rule(RuleRequest::Revoke {
                group: group.clone(),
                rules: rules.clone(),
            });
            out.show(client::request(socket, &request)?, |r: reply::Revoked| {
                format!("revoked {}\n", client::joined(&r.revoked))
            })
        }
        Verb::Modify {
            group,
            rule,
            fields,
        } => {
            let request = Request::Rule(RuleRequest::Modify {
                group: group.clone(),
                rule: rule.clone(),
                spec: fields.text().context(
                    "rule modify replaces the whole rule: it needs --direction, --protocol and --peer",
                )?,
            });
            out.show(client::request(socket, &request)?, |r: reply::Changed| {
                format!("modified {}\n", r.id)
            })
        }
        Verb::List { group, nic } => {
            let request = Request::Rule(RuleRequest::List {
                group: group.clone(),
                nic: nic.clone(),
            });
            let answer = client::request(socket, &request)?;
            if nic.is_some() {
                out.show(answer, |rows: Vec<reply::MergedRule>| merged_table(&rows))
            } else {
                out.show(answer, |rules: Vec<Rule>| render(&rules))
            }
        }
        Verb::Import {
            group,
            file,
            format,
        } => import(socket, out, group, file, format.as_deref()),
        Verb::Export {
            group,
            format,
            region,
            output,
            save,
        } => {
            let request = Request::Rule(RuleRequest::Export {
                group: group.clone(),
                format: format.clone(),
                region: region.clone(),
            });
            let answer = client::request(socket, &request)?;
            if out.json {
                return client::print_json(&answer);
            }
            write_export(&client::decode(answer)?, output.as_deref(), *save)
        }
    }
}

fn import(
    socket: &Path,
    out: &Output,
    group: &str,
    file: &Path,
    format: Option<&str>,
) -> anyhow::Result<()> {
    let csv = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let request = Request::Rule(RuleRequest::Import {
        group: group.to_owned(),
        format: format
            .unwrap_or(if csv { "csv" } else { "json" })
            .to_owned(),
        text: client::read_input(file)?,
    });
    out.show(client::request(socket, &request)?, |r: reply::Imported| {
        let mut text = format!(
            "imported {}\n{}",
            client::count(r.imported.len(), "rule", "rules"),
            client::lines(&r.imported)
        );
        if !r.skipped.is_empty() {
            let mut t = Table::new(&["skipped", "reason"]);
            for s in &r.skipped {
                t.row(vec![s.index.to_string(), s.reason.clone()]);
            }
            text.push_str(&t.render());
        }
        text
    })
}

/// Writes an export to `output`, to the file name it came with (`save`), or
/// to standard output.
fn write_export(export: &reply::Exported, output: Option<&Path>, save: bool) -> anyhow::Result<()> {
    let path = match (output, save) {
        (Some(path), _) => path.to_owned(),
        (None, true) => {
            // The name comes from the daemon: keep it a plain name in the
            // current directory.
            let name = Path::new(&export.file_name);
            if name.file_name() != Some(name.as_os_str()) {
                bail!(
                    "sg-agent named the export {:?}, not a plain file name",
                    export.file_name
                );
            }
            name.to_owned()
        }
        (None, false) => {
            // To a terminal, maybe: what a terminal would act on is escaped
            // (`--output` and `--save` write the exact text).
            print!("{}", client::printable(&export.text));
            return Ok(());
        }
    };
    std::fs::write(&path, &export.text).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// A rule's destination ports as the user writes them.
pub fn ports(spec: &PortSpec) -> String {
    match spec {
        PortSpec::Any => "-1/-1".to_owned(),
        PortSpec::Range(r) => r.to_string(),
        PortSpec::List(id) => id.to_string(),
    }
}

/// A group's rules as a table, or `no rules`.
pub fn render(rules: &[Rule]) -> String {
    if rules.is_empty() {
        return "no rules\n".to_owned();
    }
    let mut t = Table::new(&[
        "rule",
        "direction",
        "policy",
        "priority",
        "protocol",
        "ports",
        "peer",
        "source ports",
        "local",
        "description",
    ]);
    for r in rules {
        let s = &r.spec;
        t.row(vec![
            r.id.to_string(),
            s.direction.to_string(),
            s.action.to_string(),
            s.priority.to_string(),
            s.protocol.to_string(),
            ports(&s.ports),
            s.peer.to_string(),
            s.source_ports.map(|p| p.to_string()).unwrap_or_default(),
            s.local.map(|c| c.to_string()).unwrap_or_default(),
            s.description.clone(),
        ]);
    }
    t.render()
}

/// A NIC's merged rules, in the order the daemon sorted them.
fn merged_table(rows: &[reply::MergedRule]) -> String {
    if rows.is_empty() {
        return "no rules\n".to_owned();
    }
    let mut t = Table::new(&[
        "direction",
        "priority",
        "action",
        "group",
        "rule",
        "protocol",
        "ports",
        "peer",
        "source ports",
        "local",
    ]);
    for r in rows {
        t.row(vec![
            r.direction.clone(),
            r.priority.to_string(),
            r.action.clone(),
            r.group.clone(),
            r.rule.clone(),
            r.protocol.clone(),
            r.ports.clone(),
            r.peer.clone(),
            r.source_ports.clone().unwrap_or_default(),
            r.local.clone().unwrap_or_default(),
        ]);
    }
    t.render()
}
