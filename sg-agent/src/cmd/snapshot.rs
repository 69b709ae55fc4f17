//! `sg-agent snapshot`: the kept copies of groups' rules, and putting one
//! back.

use std::path::Path;

use serde::Deserialize;
use sg_agent::{api::Request, policy::Rule};

use super::{
    client::{self, Output, Table},
    rule,
};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    verb: Verb,
    #[command(flatten)]
    out: Output,
}

#[derive(clap::Subcommand)]
enum Verb {
    /// List snapshots, newest first.
    List {
        /// Only this group's (`sg-…`).
        #[arg(long)]
        group: Option<String>,
    },
    /// Show a snapshot and the rules it holds.
    Show {
        /// The snapshot's number.
        id: u64,
    },
    /// Put a snapshot's rules back into its group, replacing the group's
    /// current rules.
    Restore {
        /// The snapshot's number.
        id: u64,
    },
}

/// A snapshot; times are Unix seconds.
#[derive(Deserialize)]
struct Snapshot<R> {
    id: u64,
    group: String,
    group_name: String,
    window_start: i64,
    taken_at: i64,
    /// A count in a list, the rules themselves in `show`.
    rules: R,
}

#[derive(Deserialize)]
struct Restored {
    group: String,
    rules: u64,
}

pub fn run(socket: &Path, args: &Args) -> anyhow::Result<()> {
    let out = &args.out;
    let request = match &args.verb {
        Verb::List { group } => Request::SnapshotList {
            group: group.clone(),
        },
        Verb::Show { id } => Request::SnapshotShow { id: *id },
        Verb::Restore { id } => Request::SnapshotRestore { id: *id },
    };
    let answer = client::request(socket, &request)?;
    match &args.verb {
        Verb::List { .. } => out.show(answer, |list: Vec<Snapshot<u64>>| {
            if list.is_empty() {
                return "no snapshots\n".to_owned();
            }
            let mut t = Table::new(&[
                "id",
                "group",
                "name",
                "window start (UTC)",
                "taken at (UTC)",
                "rules",
            ]);
            for s in list {
                t.row(vec![
                    s.id.to_string(),
                    s.group,
                    s.group_name,
                    utc(s.window_start),
                    utc(s.taken_at),
                    s.rules.to_string(),
                ]);
            }
            t.render()
        }),
        Verb::Show { .. } => out.show(answer, |s: Snapshot<Vec<Rule>>| {
            let mut text = client::fields(&[
                ("snapshot", s.id.to_string()),
                ("group", s.group),
                ("name", s.group_name),
                ("window start", format!("{} UTC", utc(s.window_start))),
                ("taken at", format!("{} UTC", utc(s.taken_at))),
            ]);
            text.push('\n');
            text.push_str(&rule::render(&s.rules));
            text
        }),
        Verb::Restore { .. } => out.show(answer, |r: Restored| {
            format!(
                "restored {} to {}\n",
                client::count(
                    usize::try_from(r.rules).unwrap_or(usize::MAX),
                    "rule",
                    "rules"
                ),
                r.group
            )
        }),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` in UTC.
fn utc(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01.
///
/// Counts in 400-year eras of 146,097 days starting on March 1st, so the
/// leap day falls at the end of each counted year.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn unix_seconds_read_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_709_251_199), "2024-02-29 23:59:59");
        assert_eq!(utc(1_735_689_600), "2025-01-01 00:00:00");
        assert_eq!(utc(-1), "1969-12-31 23:59:59");
        assert_eq!(utc(4_107_542_400), "2100-03-01 00:00:00");
    }
}
