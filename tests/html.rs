//! `vantage diagnose --format html`: snapshots of the page on two lab scenarios, the SVG
//! timeline parsed as XML (lanes and markers where the scenario puts them), and the page loaded
//! in headless Chromium (the DOM after render, and a screenshot kept under
//! `target/test-artifacts/`).
//!
//! The browser test is skipped, with a message, only when Chromium cannot run at all; with
//! `VANTAGE_REQUIRE_BROWSER=1` (what `.ci/run` sets, after installing it) it fails instead.

use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{stdout, three, vantage};

fn html(s: &str) -> String {
    stdout(
        vantage()
            .args(["diagnose", "--format", "html"])
            .args(three(s)),
    )
}

/// The only volatile part: the version in the footer.
fn redact(page: &str) -> String {
    page.replace(
        &format!("vantage {} ·", env!("CARGO_PKG_VERSION")),
        "vantage [version] ·",
    )
}

#[test]
fn html_snapshots() {
    insta::assert_snapshot!("conntrack_reject_html", redact(&html("conntrack-reject")));
    insta::assert_snapshot!("nginx_ws_html", redact(&html("nginx-ws")));
}

#[test]
fn page_is_self_contained() {
    for s in ["conntrack-reject", "nginx-ws"] {
        let page = html(s);
        assert!(page.starts_with("<!DOCTYPE html>"));
        for bad in [
            "<link",
            " src=",
            "@import",
            "url(",
            "http://",
            "https://",
            "@font-face",
        ] {
            let hits: Vec<&str> = page
                .match_indices(bad)
                .map(|(i, _)| &page[i.saturating_sub(40)..(i + 60).min(page.len())])
                // The SVG namespace is a name, not a fetch.
                .filter(|ctx| !ctx.contains("http://www.w3.org/2000/svg"))
                .collect();
            assert!(hits.is_empty(), "{s}: external reference {bad:?}: {hits:?}");
        }
        for part in ["Findings", "Timelines", "Evidence", "Clock offsets"] {
            assert!(page.contains(&format!("<h2>{part}</h2>")), "{s}: no {part}");
        }
        assert!(page.contains("id=\"verdict\""));
        assert!(page.contains("<table class=\"offsets\">"));
        // Display filters in <code>.
        assert!(page.contains("<code class=\"filter\">(ip.addr=="), "{s}");
    }
}

/// One lane of a parsed timeline.
#[derive(Debug)]
struct ParsedLane {
    vantage: String,
    /// Class lists of its markers (`marker rst ev`), with their hover text.
    markers: Vec<(Vec<String>, String)>,
    /// Idle stretches: (seconds, label).
    idle: Vec<(f64, String)>,
}

impl ParsedLane {
    fn count(&self, class: &str) -> usize {
        self.markers
            .iter()
            .filter(|(c, _)| c.iter().any(|x| x == class))
            .count()
    }
    fn titles(&self, class: &str) -> Vec<&str> {
        self.markers
            .iter()
            .filter(|(c, _)| c.iter().any(|x| x == class))
            .map(|(_, t)| t.as_str())
            .collect()
    }
}

/// Every `<svg class="timeline">` of the page, parsed as XML: (connection id, lanes).
fn timelines(page: &str) -> Vec<(String, Vec<ParsedLane>)> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(i) = rest.find("<svg class=\"timeline\"") {
        let end = rest[i..].find("</svg>").expect("closed svg") + i + "</svg>".len();
        let xml = &rest[i..end];
        let doc = roxmltree::Document::parse(xml)
            .unwrap_or_else(|e| panic!("the timeline SVG is not well-formed XML: {e}"));
        let root = doc.root_element();
        let id = root.attribute("data-conn").unwrap().to_string();
        let lanes = root
            .descendants()
            .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("lane"))
            .map(|lane| {
                let markers = lane
                    .descendants()
                    .filter(|n| {
                        n.has_tag_name("g")
                            && n.attribute("class")
                                .is_some_and(|c| c.split(' ').any(|x| x == "marker"))
                    })
                    .map(|m| {
                        let classes = m
                            .attribute("class")
                            .unwrap()
                            .split(' ')
                            .map(String::from)
                            .collect();
                        let title = m
                            .children()
                            .find(|c| c.has_tag_name("title"))
                            .and_then(|t| t.text())
                            .unwrap_or_default()
                            .to_string();
                        (classes, title)
                    })
                    .collect();
                let idle = lane
                    .descendants()
                    .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("idle"))
                    .map(|g| {
                        let secs: f64 = g.attribute("data-secs").unwrap().parse().unwrap();
                        let label = g
                            .children()
                            .find(|c| c.has_tag_name("text"))
                            .and_then(|t| t.text())
                            .unwrap_or_default()
                            .to_string();
                        (secs, label)
                    })
                    .collect();
                ParsedLane {
                    vantage: lane.attribute("data-vantage").unwrap().to_string(),
                    markers,
                    idle,
                }
            })
            .collect();
        out.push((id, lanes));
        rest = &rest[end..];
    }
    out
}

/// A connection's reconnection is the same client's next connection to the same server once
/// it has ended, not one it opened beside it meanwhile, nor a later one: of four connections
/// (L1 from 0 to 10 s, L2 from 5 to 6 s beside it, L3 from 12 s, L4 from 20 s), L1's and L2's
/// timelines both mark L3, L3's marks L4. Built with etherparse: no lab capture has two
/// connections of one agent open at once.
#[test]
fn reconnect_is_the_next_connection_after_the_end() {
    use common::{write_pcapng, AGENT, P, VIP};
    let conn = |sport: u16, isn: u32, start: f64, end: f64| {
        let c = P::new(AGENT, sport, VIP, 8080);
        let s = P::new(VIP, 8080, AGENT, sport);
        let si = isn.wrapping_add(1_000_000);
        vec![
            (start, c.seq(isn).syn()),
            (start + 0.01, s.seq(si).ack(isn + 1).syn()),
            (start + 0.02, c.seq(isn + 1).ack(si + 1)),
            (start + 0.03, c.seq(isn + 1).ack(si + 1).len(10)),
            (start + 0.04, s.seq(si + 1).ack(isn + 11)),
            (end, c.seq(isn + 11).ack(si + 1).fin()),
            (end + 0.01, s.seq(si + 1).ack(isn + 12).fin()),
            (end + 0.02, c.seq(isn + 12).ack(si + 2)),
        ]
    };
    let mut packets = [
        conn(40000, 1_000, 0.0, 10.0),
        conn(40001, 50_000, 5.0, 6.0),
        conn(40002, 90_000, 12.0, 14.0),
        conn(40003, 130_000, 20.0, 22.0),
    ]
    .concat();
    packets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.pcapng");
    write_pcapng(&path, &packets);
    let page = stdout(vantage().args(["diagnose", "--format", "html"]).arg(&path));
    let drawn = timelines(&page);
    let reconnect_of = |id: &str| -> Vec<String> {
        let (_, lanes) = drawn.iter().find(|(i, _)| i == id).expect("a timeline");
        lanes[0]
            .titles("reconnect")
            .iter()
            .map(|t| t.to_string())
            .collect()
    };
    for id in ["L1", "L2"] {
        let titles = reconnect_of(id);
        assert_eq!(titles.len(), 1, "{id}: {titles:?}");
        assert!(titles[0].contains("L3"), "{id}: {titles:?}");
    }
    let titles = reconnect_of("L3");
    assert!(titles.len() == 1 && titles[0].contains("L4"), "{titles:?}");
    assert!(reconnect_of("L4").is_empty());
}

#[test]
fn timeline_lanes_and_markers_conntrack_reject() {
    let page = html("conntrack-reject");
    // Counted as text too: one lane per vantage of each drawn connection (L1 and L4).
    assert_eq!(
        page.matches("<g class=\"lane\" data-vantage=\"agent\"")
            .count(),
        2
    );
    assert_eq!(
        page.matches("<g class=\"lane\" data-vantage=\"softswitch\"")
            .count(),
        2
    );
    assert_eq!(
        page.matches("<g class=\"lane\" data-vantage=\"gateway\"")
            .count(),
        0,
        "the gateway sees only the UDP trunk: no TCP lane"
    );
    let tl = timelines(&page);
    let ids: Vec<&str> = tl.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["L1", "L4"], "TCP connections only, in order");
    let l1 = &tl[0].1;
    let names: Vec<&str> = l1.iter().map(|l| l.vantage.as_str()).collect();
    assert_eq!(names, ["agent", "softswitch"], "client side first");
    let (agent, softswitch) = (&l1[0], &l1[1]);

    // The RST reached the agent only; the softswitch never saw one.
    assert_eq!(agent.count("rst"), 1, "{agent:#?}");
    assert_eq!(softswitch.count("rst"), 0);
    assert_eq!(agent.count("fin") + softswitch.count("fin"), 0);
    let rst = agent.titles("rst")[0];
    assert!(
        rst.starts_with("RST from the server side (198.51.100.10:8080)"),
        "{rst}"
    );
    assert!(rst.contains("agent frame 31"), "{rst}");
    assert!(rst.contains("filter: frame.number == 31"), "{rst}");
    assert!(rst.contains("evidence for F1"), "{rst}");

    // Both legs: the handshake, the upgrade, the heartbeat, SIP, the last packet, the
    // reconnect.
    for lane in [agent, softswitch] {
        let v = &lane.vantage;
        assert_eq!(lane.count("syn"), 1, "{v}");
        assert_eq!(lane.count("synack"), 1, "{v}");
        assert_eq!(lane.count("upgrade"), 1, "{v}");
        assert!(lane.count("heartbeat") >= 3, "{v}");
        assert!(lane.count("sip") >= 2, "{v}: REGISTER and INVITE at least");
        assert_eq!(lane.count("last"), 1, "{v}");
        assert_eq!(lane.count("reconnect"), 1, "{v}");
        assert!(lane.titles("upgrade")[0].contains("101"), "{v}");
        assert!(lane.titles("reconnect")[0].contains("L4"), "{v}");
        assert!(lane.titles("sip").iter().any(|t| t.contains("REGISTER")));
        assert!(lane.titles("sip").iter().any(|t| t.contains("INVITE")));
    }

    // The shaded silence before the RST: ~8 s at the agent; at the softswitch the connection
    // stays open, idle, until its capture ends (the half-open side).
    assert_eq!(agent.idle.len(), 1);
    let (secs, label) = &agent.idle[0];
    assert!((*secs - 8.0).abs() < 0.1, "{secs}");
    assert_eq!(label, "8.0 s idle");
    assert_eq!(softswitch.idle.len(), 1);
    let (secs, label) = &softswitch.idle[0];
    assert!((*secs - 14.5).abs() < 0.2, "{secs}");
    assert!(label.contains("open at capture end"), "{label}");

    // Connections with findings start open; the others closed.
    assert!(page.contains("<details class=\"conn\" id=\"conn-L1\" data-conn=\"L1\" open>"));
    assert!(page.contains("<details class=\"conn\" id=\"conn-L4\" data-conn=\"L4\">"));
}

#[test]
fn timeline_lanes_and_markers_nginx_ws() {
    let tl = timelines(&html("nginx-ws"));
    let l1 = &tl.iter().find(|(id, _)| id == "L1").unwrap().1;
    let names: Vec<&str> = l1.iter().map(|l| l.vantage.as_str()).collect();
    assert_eq!(names, ["agent", "softswitch"]);
    for lane in l1 {
        // The proxy closed both legs with FINs on its own timer, after 5 s of silence.
        assert!(lane.count("fin") >= 1, "{}", lane.vantage);
        assert_eq!(lane.count("rst"), 0);
        assert_eq!(lane.idle.len(), 1);
        assert!((lane.idle[0].0 - 5.0).abs() < 0.1, "{:?}", lane.idle);
        assert_eq!(lane.idle[0].1, "5.0 s idle");
    }
    let agent_fin = l1[0].titles("fin")[0];
    assert!(
        agent_fin.starts_with("FIN from the server side"),
        "{agent_fin}"
    );
}

// ---- the real browser ----

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a command with a deadline; (success, stdout, stderr).
fn run_with_deadline(mut cmd: Proc, secs: u64) -> (bool, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out_pipe = child.stdout.take().unwrap();
    let err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(out_pipe).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(err_pipe).unwrap_or_default());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) => (s.success(), out, err),
        None => (false, out, format!("{err}\n(timed out after {secs} s)")),
    }
}

struct Chromium {
    bin: String,
    profile: PathBuf,
}

impl Chromium {
    fn cmd(&self, extra: &[&str], url: &str) -> Proc {
        let mut c = Proc::new(&self.bin);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", self.profile.display()))
        .args(extra)
        .arg(url);
        c
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A Chromium that can load a page, or why not.
fn chromium() -> Result<Chromium, String> {
    let candidates: Vec<String> = match std::env::var("VANTAGE_CHROMIUM") {
        Ok(b) => vec![b],
        Err(_) => ["chromium", "chromium-browser", "google-chrome"]
            .map(String::from)
            .to_vec(),
    };
    let profile = std::env::temp_dir().join(format!("vantage-chromium-{}", std::process::id()));
    let mut why = Vec::new();
    for bin in candidates {
        let version = Proc::new(&bin).arg("--version").output();
        match version {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                why.push(format!("{bin} --version failed: {}", o.status));
                continue;
            }
            Err(e) => {
                why.push(format!("{bin}: {e}"));
                continue;
            }
        }
        let c = Chromium {
            bin: bin.clone(),
            profile: profile.clone(),
        };
        // Can it render anything at all?
        let probe = profile.with_extension("probe.html");
        std::fs::write(&probe, "<!DOCTYPE html><p id=probe>ok</p>").unwrap();
        let (ok, dom, err) = run_with_deadline(
            c.cmd(&["--dump-dom"], &format!("file://{}", probe.display())),
            60,
        );
        let _ = std::fs::remove_file(&probe);
        if ok && dom.contains("id=\"probe\"") {
            return Ok(c);
        }
        why.push(format!(
            "{bin} cannot load a page headless: {}",
            err.lines().last().unwrap_or_default()
        ));
    }
    Err(why.join("; "))
}

/// Appended to a copy of the page: measures what the browser laid out and writes it into the
/// DOM, for `--dump-dom` to carry back.
const MEASURE: &str = r#"<script>
(function () {
  var out = [];
  var svg = document.querySelector('svg.timeline[data-conn="L1"]');
  var box = function (el) { var r = el.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; };
  svg.querySelectorAll('g.lane').forEach(function (lane) {
    var v = lane.getAttribute('data-vantage');
    var lb = box(lane);
    out.push('lane ' + v + ' ' + (lb[2] > 500 && lb[3] > 40 ? 'visible' : 'invisible'));
    lane.querySelectorAll('g.marker').forEach(function (m) {
      var b = box(m);
      var inside = b[2] > 0 && b[3] > 0 && b[0] >= lb[0] && b[0] + b[2] <= lb[0] + lb[2] + 1 && b[1] >= lb[1] - 30 && b[1] + b[3] <= lb[1] + lb[3] + 30;
      out.push('marker ' + v + ' ' + m.getAttribute('class').split(' ')[1] + ' ' + (inside ? 'visible' : 'invisible') + ' x=' + Math.round(b[0] + b[2] / 2));
    });
    lane.querySelectorAll('g.idle rect').forEach(function (r) {
      var b = box(r);
      out.push('idle ' + v + ' x0=' + Math.round(b[0]) + ' x1=' + Math.round(b[0] + b[2]) + ' ' + (b[2] > 20 ? 'visible' : 'invisible'));
    });
  });
  var pre = document.createElement('pre');
  pre.id = 'measure';
  pre.textContent = out.join('\n');
  document.body.appendChild(pre);
})();
</script>
</body>"#;

#[test]
fn browser_renders_timeline() {
    let required = std::env::var_os("VANTAGE_REQUIRE_BROWSER").is_some_and(|v| v != "0");
    let browser = match chromium() {
        Ok(b) => b,
        Err(why) if !required => {
            eprintln!(
                "SKIPPED browser_renders_timeline: Chromium cannot run here ({why}). \
                 Install it (.ci/run does) or set VANTAGE_CHROMIUM; VANTAGE_REQUIRE_BROWSER=1 makes this a failure."
            );
            return;
        }
        Err(why) => panic!("VANTAGE_REQUIRE_BROWSER is set but Chromium cannot run: {why}"),
    };
    let dir = artifacts();
    let page_path = dir.join("conntrack-reject.html");
    vantage()
        .args(["diagnose", "--format", "html", "-o"])
        .arg(&page_path)
        .args(three("conntrack-reject"))
        .assert()
        .success();
    let page = std::fs::read_to_string(&page_path).unwrap();

    // The DOM after render: the lanes and markers are there, as the browser parsed them.
    let (ok, dom, err) = run_with_deadline(
        browser.cmd(&["--dump-dom"], &format!("file://{}", page_path.display())),
        90,
    );
    assert!(ok, "chromium --dump-dom failed: {err}");
    assert!(
        dom.contains("<svg class=\"timeline\""),
        "no timeline in the DOM"
    );
    for v in ["agent", "softswitch"] {
        assert_eq!(
            dom.matches(&format!("<g class=\"lane\" data-vantage=\"{v}\""))
                .count(),
            2,
            "{v} lanes in the rendered DOM"
        );
    }
    assert_eq!(dom.matches("class=\"marker rst").count(), 1);
    for class in ["syn", "upgrade", "heartbeat", "sip", "last", "reconnect"] {
        assert!(
            dom.contains(&format!("class=\"marker {class}")),
            "no {class} marker in the rendered DOM"
        );
    }
    assert!(dom.contains("8.0 s idle"));

    // Laid out: measured by the browser itself, in a copy of the page.
    let measured_path = dir.join("conntrack-reject.measure.html");
    std::fs::write(&measured_path, page.replace("</body>", MEASURE)).unwrap();
    let (ok, dom, err) = run_with_deadline(
        browser.cmd(
            &["--dump-dom", "--window-size=1400,2000"],
            &format!("file://{}", measured_path.display()),
        ),
        90,
    );
    assert!(ok, "chromium --dump-dom failed: {err}");
    let measure = dom
        .split("<pre id=\"measure\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_else(|| panic!("the measuring script did not run"));
    let lines: Vec<&str> = measure.lines().collect();
    assert!(lines.contains(&"lane agent visible"), "{measure}");
    assert!(lines.contains(&"lane softswitch visible"), "{measure}");
    assert!(
        !lines.iter().any(|l| l.contains("invisible")),
        "something drawn outside its lane or with no size:\n{measure}"
    );
    let x_of = |prefix: &str| -> Vec<i64> {
        lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit("x=").next()?.parse().ok())
            .collect()
    };
    let rst = x_of("marker agent rst visible");
    assert_eq!(rst.len(), 1, "{measure}");
    let idle = lines
        .iter()
        .find(|l| l.starts_with("idle agent"))
        .unwrap_or_else(|| panic!("no idle stretch on the agent lane:\n{measure}"));
    let num = |key: &str| -> i64 {
        idle.split(' ')
            .find_map(|w| w.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (x0, x1) = (num("x0="), num("x1="));
    // The RST closes the shaded silence (within the RST's answer time, a few pixels).
    assert!(
        (rst[0] - x1).abs() <= 4,
        "RST at {} vs idle end {x1}",
        rst[0]
    );
    assert!(
        x1 - x0 > 100,
        "the 8 s silence is a wide stretch: {x0}..{x1}"
    );

    // The screenshot, for people.
    let png = dir.join("conntrack-reject.png");
    let _ = std::fs::remove_file(&png);
    let (ok, _, err) = run_with_deadline(
        browser.cmd(
            &[
                &format!("--screenshot={}", png.display()),
                "--window-size=1400,2000",
            ],
            &format!("file://{}", page_path.display()),
        ),
        90,
    );
    assert!(ok, "chromium --screenshot failed: {err}");
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[1..4], b"PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1400, 2000));
    assert!(bytes.len() > 50_000, "a blank page? {} bytes", bytes.len());
    eprintln!("screenshot: {}", png.display());
}
