//! `vantage diagnose` as CI and engineers run it: the three report formats (snapshots) on two
//! lab scenarios, `--fail-on` exit codes, and `-o` written whole.

mod common;
use common::{stdout, three, vantage};

fn run(format: &str, s: &str) -> String {
    stdout(
        vantage()
            .args(["diagnose", "--format", format])
            .args(three(s)),
    )
}

#[test]
fn text_reports() {
    insta::assert_snapshot!("conntrack_reject_text", run("text", "conntrack-reject"));
    insta::assert_snapshot!("nginx_ws_text", run("text", "nginx-ws"));
}

#[test]
fn markdown_reports() {
    insta::assert_snapshot!("conntrack_reject_md", run("markdown", "conntrack-reject"));
    insta::assert_snapshot!("nginx_ws_md", run("markdown", "nginx-ws"));
}

#[test]
fn json_reports() {
    for s in ["conntrack-reject", "nginx-ws"] {
        let v: serde_json::Value = serde_json::from_str(&run("json", s)).unwrap();
        assert_eq!(v["schema_version"], 1);
        for key in [
            "verdict",
            "captures",
            "clock_offsets",
            "connections",
            "findings",
        ] {
            assert!(v.get(key).is_some(), "{s}: no {key}");
        }
        insta::assert_json_snapshot!(format!("{}_json", s.replace('-', "_")), v);
    }
}

#[test]
fn fail_on_gives_ci_exit_codes() {
    // A scenario with critical findings.
    vantage()
        .args(["diagnose", "--format", "json", "--fail-on", "critical"])
        .args(three("conntrack-reject"))
        .assert()
        .code(1);
    // A healthy control: nothing at or above warning.
    vantage()
        .args(["diagnose", "--format", "json", "--fail-on", "warning"])
        .args(three("control-conntrack"))
        .assert()
        .code(0);
    // control-nginx has an info finding (the L7 proxy): --fail-on info trips on it.
    vantage()
        .args(["diagnose", "--format", "json", "--fail-on", "info"])
        .args(three("control-nginx"))
        .assert()
        .code(1);
    // Without --fail-on findings do not change the exit code.
    vantage()
        .args(["diagnose", "--format", "json"])
        .args(three("conntrack-reject"))
        .assert()
        .code(0);
    // Errors are 2, even with --fail-on.
    vantage()
        .args(["diagnose", "--fail-on", "critical", "agent=Cargo.toml"])
        .assert()
        .code(2);
}

#[test]
fn output_file_is_written_whole_and_input_untouched() {
    let dir = std::env::temp_dir().join(format!("vantage-diag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.md");
    std::fs::write(&out, "old report").unwrap();
    let before: Vec<(String, Vec<u8>)> = three("conntrack-reject")
        .iter()
        .map(|s| {
            let p = s.split_once('=').unwrap().1.to_string();
            let b =
                std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&p)).unwrap();
            (p, b)
        })
        .collect();
    vantage()
        .args(["diagnose", "--format", "markdown", "-o"])
        .arg(&out)
        .args(three("conntrack-reject"))
        .assert()
        .success()
        .stdout("");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("# vantage diagnosis"));
    assert_eq!(text, run("markdown", "conntrack-reject"));
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    for (p, b) in before {
        let now = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&p)).unwrap();
        assert_eq!(now, b, "{p} changed");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run that fails leaves an existing report whole, and no temporary file behind.
#[test]
fn a_failed_run_never_leaves_half_a_report() {
    let dir = std::env::temp_dir().join(format!("vantage-diag-fail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.md");
    std::fs::write(&out, "the previous report").unwrap();
    vantage()
        .args(["diagnose", "--format", "markdown", "-o"])
        .arg(&out)
        .arg("agent=Cargo.toml")
        .assert()
        .code(2);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "the previous report"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // An -o into a folder that does not exist is an error naming it, not a panic.
    vantage()
        .args(["diagnose", "-o", "/nonexistent/dir/r.md"])
        .args(three("conntrack-reject"))
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "/nonexistent/dir/r.md: cannot write",
        ));
    std::fs::remove_dir_all(&dir).unwrap();
}
