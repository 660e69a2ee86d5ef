//! The command line: which deployment to examine (a SAM stack, or an ECS cluster and service),
//! where, how long to wait for the trace, and how to print. Parsed by hand: a dozen flags and
//! no subcommands do not need a parser crate, and every error names the flag.

use std::time::Duration;

/// What `--help` prints.
pub const USAGE: &str = "\
doctor: checks a deployed apuntador-backend end to end (docs/doctor.md)

Usage:
  doctor --stack NAME [--region REGION] [--url URL] [--timeout SECONDS] [--json]
  doctor --cluster NAME --service NAME [--url URL] [--region REGION]
         [--since-minutes MINUTES] [--timeout SECONDS] [--json]

  --stack NAME          the SAM stack (sam deploy's stack_name)
  --cluster, --service  an ECS deployment (deploy/ecs) instead of a stack
  --region REGION       default: the AWS SDK's chain (AWS_REGION, the profile)
  --url URL             the API to send the one request to (default with --stack: the
                        stack's ApiUrl; with ECS the request is sent only when given)
  --timeout SECONDS     how long to wait for the trace and the log lines (default 120)
  --since-minutes N     ECS: how far back the collector's log group is searched for export
                        errors (default 15)
  --json                one JSON document instead of the human verdict

Exit status: 0 nothing failed (warnings allowed), 1 a check failed, 2 usage error.
AWS endpoints follow AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE>.
";

/// A deployment the doctor examines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stack { name: String },
    Ecs { cluster: String, service: String },
}

/// Everything a run needs from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub target: Target,
    pub region: Option<String>,
    pub url: Option<String>,
    pub timeout: Duration,
    pub since: Duration,
    pub json: bool,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Help,
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("unknown argument {0:?}")]
    Unknown(String),
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("{0} is given twice")]
    Twice(&'static str),
    #[error("{flag} takes a whole number from {min} to {max}, not {value:?}")]
    BadNumber {
        flag: &'static str,
        value: String,
        min: u64,
        max: u64,
    },
    #[error("--url takes an http:// or https:// URL")]
    BadUrl,
    #[error("name a deployment: --stack NAME, or --cluster NAME --service NAME")]
    NoTarget,
    #[error("--stack and --cluster/--service name different deployments: give one of them")]
    BothTargets,
    #[error("--cluster and --service go together")]
    HalfEcs,
    #[error(
        "--since-minutes is for ECS (the collector's log group); a stack has no collector log group"
    )]
    SinceWithStack,
}

const FLAGS: [&str; 8] = [
    "--stack",
    "--cluster",
    "--service",
    "--region",
    "--url",
    "--timeout",
    "--since-minutes",
    "--json",
];

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, UsageError> {
    let mut values: [Option<String>; 7] = Default::default();
    let mut json = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Command::Help);
        }
        if arg == "--version" || arg == "-V" {
            return Ok(Command::Version);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value)),
            _ => (arg.clone(), None),
        };
        let Some(index) = FLAGS.iter().position(|f| *f == flag) else {
            return Err(UsageError::Unknown(arg));
        };
        let name = FLAGS[index];
        if name == "--json" {
            if inline.is_some() {
                return Err(UsageError::Unknown(arg));
            }
            if json {
                return Err(UsageError::Twice(name));
            }
            json = true;
            continue;
        }
        let value = match inline {
            Some(value) => value.to_owned(),
            None => args
                .next()
                .filter(|v| !v.starts_with("--"))
                .ok_or(UsageError::MissingValue(name))?,
        };
        if value.trim().is_empty() {
            return Err(UsageError::MissingValue(name));
        }
        if values[index].replace(value).is_some() {
            return Err(UsageError::Twice(name));
        }
    }
    let [stack, cluster, service, region, url, timeout, since] = values;
    let target = match (stack, cluster, service) {
        (Some(name), None, None) => Target::Stack { name },
        (None, Some(cluster), Some(service)) => Target::Ecs { cluster, service },
        (None, None, None) => return Err(UsageError::NoTarget),
        (Some(_), _, _) => return Err(UsageError::BothTargets),
        _ => return Err(UsageError::HalfEcs),
    };
    if let Some(url) = &url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(UsageError::BadUrl);
    }
    if since.is_some() && matches!(target, Target::Stack { .. }) {
        return Err(UsageError::SinceWithStack);
    }
    let timeout = number("--timeout", timeout, 120, 1, 3600)?;
    let since = number("--since-minutes", since, 15, 1, 1440)?;
    Ok(Command::Run(Options {
        target,
        region,
        url,
        timeout: Duration::from_secs(timeout),
        since: Duration::from_secs(since * 60),
        json,
    }))
}

fn number(
    flag: &'static str,
    value: Option<String>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, UsageError> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(UsageError::BadNumber {
            flag,
            value,
            min,
            max,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(|a| (*a).to_owned()))
    }

    fn options(args: &[&str]) -> Options {
        match run(args) {
            Ok(Command::Run(options)) => options,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn a_stack_with_defaults() {
        let options = options(&["--stack", "apuntador-backend"]);
        assert_eq!(
            options.target,
            Target::Stack {
                name: "apuntador-backend".into()
            }
        );
        assert_eq!(options.timeout, Duration::from_secs(120));
        assert_eq!(options.since, Duration::from_secs(15 * 60));
        assert_eq!(
            (options.region, options.url, options.json),
            (None, None, false)
        );
    }

    #[test]
    fn an_ecs_service_with_every_flag_in_both_spellings() {
        let options = options(&[
            "--cluster=c",
            "--service",
            "s",
            "--region",
            "eu-west-1",
            "--url=https://api.example.com/",
            "--timeout",
            "30",
            "--since-minutes=5",
            "--json",
        ]);
        assert_eq!(
            options.target,
            Target::Ecs {
                cluster: "c".into(),
                service: "s".into()
            }
        );
        assert_eq!(options.region.as_deref(), Some("eu-west-1"));
        assert_eq!(options.url.as_deref(), Some("https://api.example.com/"));
        assert_eq!(options.timeout, Duration::from_secs(30));
        assert_eq!(options.since, Duration::from_secs(300));
        assert!(options.json);
    }

    #[test]
    fn help_and_version_win() {
        assert_eq!(run(&["--stack", "x", "--help"]), Ok(Command::Help));
        assert_eq!(run(&["-V"]), Ok(Command::Version));
    }

    #[test]
    fn each_mistake_is_named() {
        assert_eq!(run(&[]), Err(UsageError::NoTarget));
        assert_eq!(run(&["--stack"]), Err(UsageError::MissingValue("--stack")));
        assert_eq!(
            run(&["--stack", "--json"]),
            Err(UsageError::MissingValue("--stack"))
        );
        assert_eq!(
            run(&["--stack", "a", "--stack", "b"]),
            Err(UsageError::Twice("--stack"))
        );
        assert_eq!(
            run(&["--stack", "a", "--cluster", "c", "--service", "s"]),
            Err(UsageError::BothTargets)
        );
        assert_eq!(run(&["--cluster", "c"]), Err(UsageError::HalfEcs));
        assert_eq!(
            run(&["--stack", "a", "--verbose"]),
            Err(UsageError::Unknown("--verbose".into()))
        );
        assert_eq!(
            run(&["--stack", "a", "--url", "api.example.com"]),
            Err(UsageError::BadUrl)
        );
        assert_eq!(
            run(&["--stack", "a", "--since-minutes", "5"]),
            Err(UsageError::SinceWithStack)
        );
        assert!(matches!(
            run(&["--stack", "a", "--timeout", "0"]),
            Err(UsageError::BadNumber {
                flag: "--timeout",
                ..
            })
        ));
        assert!(matches!(
            run(&["--stack", "a", "--timeout", "2m"]),
            Err(UsageError::BadNumber {
                flag: "--timeout",
                ..
            })
        ));
    }
}
