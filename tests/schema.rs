//! The JSON Schema of `vantage diagnose --format json` is generated from the types
//! (`diagnose::Diagnosis`, with schemars) and committed beside them, so that consumers can
//! validate reports. This test fails when the types changed and the committed schema did not;
//! regenerate with `VANTAGE_UPDATE_SCHEMA=1 cargo test --test schema`.

use std::path::Path;

const COMMITTED: &str = "src/diagnose/diagnosis.schema.json";

fn generated() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(vantage::diagnose::Diagnosis)).unwrap()
}

#[test]
fn committed_schema_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED);
    let now = serde_json::to_string_pretty(&generated()).unwrap() + "\n";
    if std::env::var_os("VANTAGE_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let committed = std::fs::read_to_string(&path).expect("committed schema");
    assert_eq!(committed, now, "regenerate with VANTAGE_UPDATE_SCHEMA=1");
}

/// Every property the schema requires at the top level and in each finding is present in a real
/// report, and no top-level key of the report is missing from the schema.
#[test]
fn a_real_report_has_what_the_schema_requires() {
    let schema = generated();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/conntrack-reject");
    let specs: Vec<vantage::pipeline::VantageSpec> =
        ["agent=agent.pcapng", "softswitch=softswitch.pcap"]
            .iter()
            .map(|s| {
                let (n, f) = s.split_once('=').unwrap();
                vantage::pipeline::VantageSpec {
                    name: n.into(),
                    path: root.join(f),
                }
            })
            .collect();
    let (v, errors) = vantage::pipeline::read_vantages(&specs);
    assert!(errors.is_empty());
    let al = vantage::align::align(v, &Default::default());
    let report = serde_json::to_value(vantage::diagnose::diagnose(&al)).unwrap();
    let required = |s: &serde_json::Value| -> Vec<String> {
        s["required"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    for key in required(&schema) {
        assert!(report.get(&key).is_some(), "report lacks {key}");
    }
    let props = schema["properties"].as_object().unwrap();
    for key in report.as_object().unwrap().keys() {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
    let finding = &schema["$defs"]["Finding"];
    assert!(!report["findings"].as_array().unwrap().is_empty());
    for f in report["findings"].as_array().unwrap() {
        for key in required(finding) {
            assert!(f.get(&key).is_some(), "finding lacks {key}");
        }
    }
}
