//! The command line as a user meets it before any AWS call: help, version, usage errors (exit
//! status 2 with the reason and the usage), and a run with no region anywhere.

use std::process::Command;

fn doctor(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_doctor"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", "/nonexistent/doctor-tests/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/doctor-tests/credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .output()
        .expect("doctor runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_prints_the_usage_and_the_exit_statuses() {
    let (code, stdout, _) = doctor(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("doctor --stack NAME [--region REGION]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("doctor --cluster NAME --service NAME"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "Exit status: 0 nothing failed (warnings allowed), 1 a check failed, 2 usage error."
        ),
        "{stdout}"
    );
}

#[test]
fn version_names_the_command() {
    let (code, stdout, _) = doctor(&["--version"], &[]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, concat!("doctor ", env!("CARGO_PKG_VERSION"), "\n"))
    );
}

#[test]
fn a_usage_error_exits_2_naming_the_mistake() {
    for (args, message) in [
        (
            vec![],
            "doctor: name a deployment: --stack NAME, or --cluster NAME --service NAME",
        ),
        (
            vec!["--cluster", "c"],
            "doctor: --cluster and --service go together",
        ),
        (
            vec!["--stack", "s", "--timeout", "soon"],
            "doctor: --timeout takes a whole number from 1 to 3600, not \"soon\"",
        ),
        (
            vec!["--stack", "s", "--colour"],
            "doctor: unknown argument \"--colour\"",
        ),
    ] {
        let (code, stdout, stderr) = doctor(&args, &[]);
        assert_eq!(code, 2, "{args:?}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(stderr.starts_with(message), "{args:?}: {stderr}");
        assert!(stderr.contains("Usage:"), "{args:?}: {stderr}");
    }
}

#[test]
fn no_region_anywhere_exits_2_saying_how_to_give_one() {
    let (code, stdout, stderr) = doctor(&["--stack", "apuntador-backend"], &[]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert_eq!(
        stderr,
        "doctor: no AWS region: pass --region or set AWS_REGION (or a profile's region)\n"
    );
}
