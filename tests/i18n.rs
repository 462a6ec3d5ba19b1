//! Reports in the engineers' language: the English and Simplified Chinese catalogs hold the same
//! keys, every key the code asks for exists, the Markdown report reads right in both languages
//! (snapshots), the JSON document differs between them only in its human-readable strings, and
//! the default language follows the locale.

use std::collections::BTreeSet;
use std::path::Path;

use assert_cmd::Command;
use vantage::i18n::{keys, Catalog, Lang, Msg};

mod common;

const CONNTRACK: [&str; 3] = [
    "agent=fixtures/conntrack-reject/agent.pcapng",
    "softswitch=fixtures/conntrack-reject/softswitch.pcap",
    "gateway=fixtures/conntrack-reject/gateway.pcap",
];

fn vantage() -> Command {
    let mut c = common::vantage();
    for k in ["LC_ALL", "LC_MESSAGES", "LANG"] {
        c.env_remove(k);
    }
    c
}

fn diagnose(lang: &str, format: &str) -> String {
    common::stdout(
        vantage()
            .args(["diagnose", "--lang", lang, "--format", format])
            .args(CONNTRACK),
    )
}

/// The catalog files on disk, parsed: the keys of each file, per language.
fn keys_on_disk(lang: &str) -> BTreeSet<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/i18n")
        .join(lang);
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "ftl") {
            continue;
        }
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let res = fluent_syntax::parser::parse(text.as_str())
            .unwrap_or_else(|(_, e)| panic!("{}: {e:?}", path.display()));
        for e in res.body {
            match e {
                fluent_syntax::ast::Entry::Message(m) => {
                    out.insert((file.clone(), m.id.name.to_string()));
                }
                fluent_syntax::ast::Entry::Term(t) => {
                    out.insert((file.clone(), format!("-{}", t.id.name)));
                }
                _ => {}
            }
        }
    }
    out
}

#[test]
fn catalogs_have_the_same_keys_in_every_language() {
    let en = keys_on_disk("en");
    let zh = keys_on_disk("zh-CN");
    assert!(en.len() > 100, "{} keys", en.len());
    let only_en: Vec<_> = en.difference(&zh).collect();
    let only_zh: Vec<_> = zh.difference(&en).collect();
    assert!(
        only_en.is_empty() && only_zh.is_empty(),
        "only in en: {only_en:?}; only in zh-CN: {only_zh:?}"
    );
    // What is embedded is what is on disk, and no key is defined twice.
    for lang in Lang::ALL {
        let embedded = keys(lang);
        let unique: BTreeSet<_> = embedded.iter().cloned().collect();
        assert_eq!(unique.len(), embedded.len(), "{lang}: a key defined twice");
        let disk: BTreeSet<String> = en.iter().map(|(_, k)| k.clone()).collect();
        assert_eq!(
            unique, disk,
            "{lang}: embedded catalog differs from the files"
        );
    }
}

/// Every key named in the code (`Msg::new("...")`, `cat.get("...")`) is in the catalogs.
#[test]
fn every_key_the_code_uses_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let known: BTreeSet<String> = keys(Lang::En).into_iter().collect();
    let mut used = BTreeSet::new();
    for file in [
        "src/diagnose/mod.rs",
        "src/diagnose/rules.rs",
        "src/report/mod.rs",
        "src/report/html.rs",
        "src/capture.rs",
        "src/pipeline.rs",
        "src/tcp/mod.rs",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        // Any string literal that looks like a catalog key next to a catalog call.
        for (i, _) in text
            .match_indices("Msg::new(")
            .chain(text.match_indices("cat.get("))
        {
            // The literals up to the call's first `)`: its key, or the keys of an
            // `if ... else ...` or a `match`.
            let call = text[i..].split(')').next().unwrap_or("");
            for lit in call.split('"').skip(1).step_by(2) {
                let key_like = lit.starts_with(|c: char| c.is_ascii_lowercase())
                    && lit
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                if key_like {
                    used.insert(lit.to_string());
                }
            }
        }
    }
    let missing: Vec<_> = used.difference(&known).collect();
    assert!(used.len() > 80, "{} keys found in the code", used.len());
    assert!(
        missing.is_empty(),
        "keys used but not in the catalogs: {missing:?}"
    );
}

#[test]
fn markdown_report_in_both_languages() {
    insta::assert_snapshot!("conntrack_reject_md_en", diagnose("en", "markdown"));
    insta::assert_snapshot!("conntrack_reject_md_zh_cn", diagnose("zh-CN", "markdown"));
}

/// The Chinese report reads as Chinese: the verdict and findings use the usual terms, seconds
/// are "秒" with a decimal point, and no English sentence of the catalog slipped through.
#[test]
fn chinese_report_uses_chinese_terms_and_units() {
    let md = diagnose("zh-CN", "markdown");
    for term in [
        "中间设备",
        "空闲超时",
        "心跳",
        "四层",
        "抓包",
        "座席",
        "软交换",
        "8.006 秒",
    ] {
        assert!(md.contains(term), "no {term} in\n{md}");
    }
    for english in [
        "middlebox ",
        "silence",
        "Recommendation",
        "Verdict",
        " s of ",
    ] {
        assert!(!md.contains(english), "{english} in\n{md}");
    }
    let text = diagnose("zh-CN", "text");
    assert!(text.starts_with("结论："), "{text}");
    let html = diagnose("zh-CN", "html");
    assert!(html.contains("<html lang=\"zh-CN\">"));
    assert!(html.contains("<h2>诊断发现</h2>"));
}

/// Walks two JSON trees in step: same keys, same numbers, booleans and kinds; strings may differ
/// only where a person reads them.
fn same_but_words(a: &serde_json::Value, b: &serde_json::Value, path: &str, diffs: &mut usize) {
    use serde_json::Value;
    const HUMAN: [&str; 6] = [
        "summary",
        "explanation",
        "recommendation",
        "what",
        "would_change",
        "lang",
    ];
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<_> = x.keys().collect();
            let ky: Vec<_> = y.keys().collect();
            assert_eq!(kx, ky, "{path}: other keys");
            for (k, v) in x {
                same_but_words(v, &y[k], &format!("{path}.{k}"), diffs);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: other length");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                same_but_words(v, w, &format!("{path}[{i}]"), diffs);
            }
        }
        (Value::String(x), Value::String(y)) => {
            let field = path.rsplit('.').next().unwrap_or("");
            if HUMAN.contains(&field) {
                if x != y {
                    *diffs += 1;
                }
            } else {
                assert_eq!(x, y, "{path}: a machine string changed with the language");
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn json_differs_between_languages_only_in_words() {
    let en: serde_json::Value = serde_json::from_str(&diagnose("en", "json")).unwrap();
    let zh: serde_json::Value = serde_json::from_str(&diagnose("zh-CN", "json")).unwrap();
    assert_eq!(en["lang"], "en");
    assert_eq!(zh["lang"], "zh-CN");
    let mut diffs = 0;
    same_but_words(&en, &zh, "$", &mut diffs);
    // Every finding's summary, explanation and recommendation, every evidence item, the verdict.
    let findings = en["findings"].as_array().unwrap();
    let evidence: usize = findings
        .iter()
        .map(|f| f["evidence"].as_array().unwrap().len())
        .sum();
    assert_eq!(diffs, 1 + 2 + findings.len() * 3 + evidence, "{diffs}");
    // Kinds and severities stay English.
    assert_eq!(zh["findings"][0]["kind"], "middlebox_reset");
    assert_eq!(zh["findings"][0]["severity"], "critical");
}

#[test]
fn default_language_follows_the_locale() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    assert_eq!(Lang::from_vars(env(&[])), Lang::En);
    assert_eq!(Lang::from_vars(env(&[("LANG", "zh_CN.UTF-8")])), Lang::ZhCn);
    assert_eq!(Lang::from_vars(env(&[("LANG", "en_US.UTF-8")])), Lang::En);
    assert_eq!(Lang::from_vars(env(&[("LANG", "de_DE.UTF-8")])), Lang::En);
    assert_eq!(
        Lang::from_vars(env(&[("LC_ALL", "C"), ("LANG", "zh_CN.UTF-8")])),
        Lang::En
    );
    assert_eq!(
        Lang::from_vars(env(&[("LC_ALL", ""), ("LC_MESSAGES", "zh_CN.gb18030")])),
        Lang::ZhCn
    );
    assert_eq!(Lang::parse("zh-CN"), Some(Lang::ZhCn));
    assert_eq!(Lang::parse("zh_cn"), Some(Lang::ZhCn));
    assert_eq!(Lang::parse("en"), Some(Lang::En));
    assert_eq!(Lang::parse("fr"), None);

    // The binary: LANG decides when --lang is absent, --lang wins, --help stays English.
    let out = vantage()
        .env("LANG", "zh_CN.UTF-8")
        .args(["diagnose"])
        .args(CONNTRACK)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("结论："));
    let out = vantage()
        .env("LANG", "zh_CN.UTF-8")
        .args(["diagnose", "--lang", "en"])
        .args(CONNTRACK)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Verdict: "));
    let out = vantage()
        .env("LANG", "zh_CN.UTF-8")
        .args(["diagnose", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Explain why connections died"), "{help}");
    assert!(!help.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)));
}

#[test]
fn catalog_renders_plurals_and_units() {
    let en = Catalog::new(Lang::En);
    let zh = Catalog::new(Lang::ZhCn);
    let one = Msg::new("l7-summary").n("n", 1);
    let two = Msg::new("l7-summary").n("n", 2);
    assert!(en.render(&one).contains("1 connection run"));
    assert!(en.render(&two).contains("2 connections run"));
    assert!(zh.render(&two).contains("2 条连接"));
    let secs = Msg::new("secs").s("s", "8.0");
    assert_eq!(en.render(&secs), "8.0 s");
    assert_eq!(zh.render(&secs), "8.0 秒");
    // No Unicode isolation marks around arguments.
    assert!(!zh.render(&secs).contains('\u{2068}'));
}

/// Text arguments up to `SHORT_ARG` bytes are kept inline and longer ones boxed, and both
/// render whole, multi-byte characters included, at and around the boundary.
#[test]
fn text_arguments_render_whole_inline_or_boxed() {
    use vantage::i18n::{Arg, SHORT_ARG};
    let en = Catalog::new(Lang::En);
    for text in [
        "x".repeat(SHORT_ARG),
        "x".repeat(SHORT_ARG + 1),
        // 21 bytes and then a 3-byte character: 24, boxed.
        format!("{}秒", "x".repeat(SHORT_ARG - 1)),
        "秒".repeat(7),
        String::new(),
    ] {
        let m = Msg::new("secs").s("s", &text);
        assert_eq!(en.render(&m), format!("{text} s"));
        let inline = matches!(m.args[0].1, Arg::Short(_));
        assert_eq!(inline, text.len() <= SHORT_ARG, "{text:?}");
    }
}

/// Every lab scenario, with all five captures and with the agent's alone (single-vantage
/// wording), renders in both languages with every placeholder filled, and the Chinese findings
/// and verdict are Chinese.
#[test]
fn every_scenario_renders_in_both_languages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let scenarios = [
        "conntrack-drop",
        "conntrack-reject",
        "conntrack-reject-serverka",
        "control-conntrack",
        "control-haproxy",
        "control-nginx",
        "haproxy-fin",
        "haproxy-nolinger",
        "nginx-ws",
        "weak-network",
    ];
    let five = [
        ("agent", "agent.pcapng"),
        ("slb-agent-side", "slb-agent-side.pcap"),
        ("slb-server-side", "slb-server-side.pcap"),
        ("softswitch", "softswitch.pcap"),
        ("gateway", "gateway.pcap"),
    ];
    let cjk = |s: &str| s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
    let mut kinds = BTreeSet::new();
    for s in scenarios {
        for names in [&five[..], &five[..1]] {
            let specs: Vec<vantage::pipeline::VantageSpec> = names
                .iter()
                .filter(|(_, f)| root.join(s).join(f).exists())
                .map(|(n, f)| vantage::pipeline::VantageSpec {
                    name: n.to_string(),
                    path: root.join(s).join(f),
                })
                .collect();
            let (v, errors) = vantage::pipeline::read_vantages(&specs);
            assert!(errors.is_empty(), "{s}: {errors:?}");
            let al = vantage::align::align(v, &Default::default());
            for lang in Lang::ALL {
                let d = vantage::diagnose::diagnose_with(&al, 50, lang);
                let md = vantage::report::diagnose_markdown(&d, &al);
                let text = vantage::report::diagnose_text(&d, &al);
                let html = vantage::report::html::render(&d, &al);
                for out in [&md, &text, &html] {
                    assert!(!out.contains("{$") && !out.contains("{ $"), "{s} {lang}");
                }
                if lang == Lang::ZhCn {
                    assert!(cjk(&d.verdict.summary), "{s}: {}", d.verdict.summary);
                    assert!(cjk(&d.verdict.would_change), "{s}");
                    for f in &d.findings {
                        kinds.insert(f.kind.name());
                        assert!(cjk(&f.summary), "{s}: {}", f.summary);
                        assert!(cjk(&f.explanation), "{s}: {}", f.explanation);
                        assert!(cjk(&f.recommendation), "{s}: {}", f.recommendation);
                        for e in &f.evidence {
                            assert!(cjk(&e.what) || e.what == "重传", "{s}: {}", e.what);
                        }
                    }
                }
            }
        }
    }
    assert!(kinds.len() >= 8, "{kinds:?}");
}

/// The HTML timeline (hover texts, labels, idle stretches, summaries, the SVG titles) speaks
/// the report's language; the English page keeps its words.
#[test]
fn html_timeline_in_the_report_language() {
    let en = diagnose("en", "html");
    let zh = diagnose("zh-CN", "html");
    assert!(en.contains(">8.0 s idle<"), "English idle label");
    assert!(en.contains("SYN from the client side"));
    assert!(zh.contains(">静默 8.0 秒<"), "Chinese idle label");
    assert!(zh.contains("每个抓包点一条泳道"));
    assert!(zh.contains("过滤器：frame.number == "));
    for english in [
        " idle",
        "open at capture end",
        "no packet in either direction",
        "SYN from",
        "SYN-ACK from",
        "bytes of data",
        "from the client side",
        "from the server side",
        "RST from",
        "heartbeat 1 of",
        "last packet",
        "reconnect ",
        "reconnect:",
        "reference clock",
        "one lane per vantage",
        "lived ",
        " vantages",
        "filter: ",
        "evidence for",
        ">from ",
        " s<",
    ] {
        assert!(
            !zh.contains(english),
            "English in the Chinese page: {english:?}"
        );
    }
}

/// The softswitch capture cut short, written once: two tests read it, and each writing it
/// again (truncate, then write) let the other read it half written.
fn cut_capture() -> std::path::PathBuf {
    static CUT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    CUT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let b = std::fs::read(root.join("fixtures/conntrack-reject/softswitch.pcap")).unwrap();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("i18n-warnings");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("softswitch-cut.pcap");
        std::fs::write(&p, &b[..b.len() - 10]).unwrap();
        p
    })
    .clone()
}

fn diagnose_cut(lang: &str, format: &str) -> (String, String) {
    let cut = cut_capture();
    let out = common::succeed(
        vantage()
            .args(["diagnose", "--lang", lang, "--format", format])
            .arg(CONNTRACK[0])
            .arg(format!("softswitch={}", cut.display())),
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A capture cut short: the reports say so in their language; the JSON document and stderr keep
/// the English line.
#[test]
fn capture_warnings_in_the_report_language() {
    let (text_en, stderr) = diagnose_cut("en", "text");
    assert!(
        text_en.contains("warning: ")
            && text_en
                .contains("the last record is cut short (capture ended mid-write?); kept the"),
        "{text_en}"
    );
    // The report's English line is the stderr line.
    let line = stderr
        .lines()
        .find(|l| l.contains("cut short"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        text_en.contains(line.trim_start_matches("vantage: ")),
        "{line}"
    );
    let (md_en, _) = diagnose_cut("en", "markdown");
    assert!(md_en.contains("the last record is cut short"), "{md_en}");
    for format in ["text", "markdown", "html"] {
        let (out, stderr) = diagnose_cut("zh-CN", format);
        assert!(
            out.contains("警告：")
                && out.contains("最后一条记录被截断（抓包时写入中断？）")
                && out.contains("字节偏移")
                && out.contains("已保留此前的"),
            "{format}: {out}"
        );
        assert!(!out.contains("cut short"), "{format}: {out}");
        assert!(!out.contains("kept the"), "{format}");
        // stderr stays English.
        assert!(stderr.contains("the last record is cut short"), "{stderr}");
    }
    let (json, _) = diagnose_cut("zh-CN", "json");
    assert!(json.contains("the last record is cut short"), "{json}");
}

/// Every kind of capture warning renders in English exactly as its English line.
#[test]
fn capture_warnings_render_as_their_english_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let en = Catalog::new(Lang::En);
    let zh = Catalog::new(Lang::ZhCn);
    let mut all = vec![];
    for p in [
        cut_capture(),
        root.join("fixtures/corpus/tcpdump/tests/timestamp_invalid_nano.pcap"),
    ] {
        all.extend(
            vantage::pipeline::track_capture(&p)
                .unwrap()
                .summary
                .warnings,
        );
    }
    let opts = vantage::tcp::TrackerOptions {
        max_live: 1,
        max_summaries: 1,
        ..Default::default()
    };
    let capped = vantage::pipeline::track_capture_with(
        &root.join("fixtures/conntrack-reject/agent.pcapng"),
        opts,
    )
    .unwrap();
    assert!(!capped.summary.warnings.is_empty());
    all.extend(capped.summary.warnings);
    assert!(all.len() >= 4, "{all:?}");
    for w in &all {
        assert_eq!(en.render(&w.msg), w.text);
        let z = zh.render(&w.msg);
        assert!(
            z.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
            "{z}"
        );
        assert!(!z.contains("{ $"), "{z}");
    }
}

/// A diagnosis is rendered once, in one language: each finding keeps its sentences and lets
/// their messages go (`render_finding`), which were the rules' peak on a large capture. On the
/// lab's three captures, in both languages: every finding and evidence item has its text, and
/// none still holds a message.
#[test]
fn rendered_findings_keep_sentences_not_messages() {
    use vantage::align::{align, AlignOptions};
    use vantage::diagnose::{diagnose_with, FindingText, MAX_EVIDENCE};
    use vantage::pipeline::{read_vantages, VantageSpec};
    let specs: Vec<VantageSpec> = CONNTRACK.iter().map(|s| s.parse().unwrap()).collect();
    let (vantages, errors) = read_vantages(&specs);
    assert!(errors.is_empty(), "{errors:?}");
    let al = align(vantages, &AlignOptions::default());
    for lang in [Lang::En, Lang::ZhCn] {
        let d = diagnose_with(&al, MAX_EVIDENCE, lang);
        assert!(!d.findings.is_empty());
        for f in &d.findings {
            assert!(
                !f.summary.is_empty() && !f.recommendation.is_empty(),
                "{f:?}"
            );
            assert_eq!(f.text, FindingText::default(), "{}", f.id);
            for e in &f.evidence {
                assert!(
                    !e.what.is_empty() && e.what_msg.is_none(),
                    "{}: {e:?}",
                    f.id
                );
            }
        }
    }
}
