//! Progress bars: drawn on a terminal only, never into piped output, coloured unless NO_COLOR
//! or `--color never`.

use std::io::Write;
use std::process::Command as Proc;

use vantage::progress::{decide, ColorChoice};

#[test]
fn colour_and_terminal_decisions() {
    // (choice, stderr is a terminal, NO_COLOR set) -> (bars drawn, colour)
    assert_eq!(decide(ColorChoice::Auto, true, false), (true, true));
    assert_eq!(decide(ColorChoice::Auto, true, true), (true, false));
    assert_eq!(decide(ColorChoice::Auto, false, false), (false, false));
    assert_eq!(decide(ColorChoice::Never, true, false), (true, false));
    assert_eq!(decide(ColorChoice::Always, false, true), (false, true));
}

/// A 6 MB capture: one UDP datagram of 1400 bytes, 4300 times.
fn big_capture(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vantage-progress-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.pcap");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    f.write_all(&0xa1b2_c3d4u32.to_le_bytes()).unwrap();
    f.write_all(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    f.write_all(&65535u32.to_le_bytes()).unwrap();
    f.write_all(&1u32.to_le_bytes()).unwrap();
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([203, 0, 113, 130], [203, 0, 113, 129], 64)
        .udp(30000, 20000);
    let mut pkt = Vec::new();
    b.write(&mut pkt, &[0u8; 1400]).unwrap();
    for i in 0..4300u32 {
        f.write_all(&(1_700_000_000 + i / 50).to_le_bytes())
            .unwrap();
        f.write_all(&((i % 50) * 20_000).to_le_bytes()).unwrap();
        f.write_all(&(pkt.len() as u32).to_le_bytes()).unwrap();
        f.write_all(&(pkt.len() as u32).to_le_bytes()).unwrap();
        f.write_all(&pkt).unwrap();
    }
    path
}

#[test]
fn piped_output_never_shows_a_bar() {
    let path = big_capture("piped");
    let out = Proc::new(assert_cmd::cargo::cargo_bin("vantage"))
        .args(["flows", "--format", "json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

/// On a terminal (util-linux `script` gives the command a pty) a bar is drawn on stderr, in
/// colour unless NO_COLOR is set. Skipped where `script` is missing.
#[test]
fn a_terminal_shows_a_bar_and_no_color_is_respected() {
    if Proc::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no `script` to give the command a terminal");
        return;
    }
    let path = big_capture("tty");
    let bin = assert_cmd::cargo::cargo_bin("vantage");
    let run = |env: &[(&str, &str)]| -> String {
        let log = path.with_extension(format!("log{}", env.len()));
        let cmd = format!(
            "{} flows --format json {} > /dev/null",
            bin.display(),
            path.display()
        );
        let mut p = Proc::new("script");
        p.args(["-qec", &cmd]).arg(&log).env_remove("NO_COLOR");
        for (k, v) in env {
            p.env(k, v);
        }
        assert!(p.output().unwrap().status.success());
        String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned()
    };
    let coloured = run(&[]);
    assert!(coloured.contains("MiB"), "no bar drawn: {coloured}");
    assert!(coloured.contains("\x1b[36m"), "no colour: {coloured}");
    let plain = run(&[("NO_COLOR", "1")]);
    assert!(plain.contains("MiB"), "no bar drawn: {plain}");
    assert!(
        !plain.contains("\x1b[36m"),
        "colour despite NO_COLOR: {plain}"
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}
