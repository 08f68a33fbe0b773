//! The shipped configurations load, validate and never run insecure.

use std::path::Path;

#[test]
fn local_configs_are_valid_and_secure() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local");
    let mut nodes = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        if path.file_stem().and_then(|s| s.to_str()) == Some("gateway") {
            let g = yrd_gateway::GatewayConfig::load(&path).unwrap();
            assert!(!g.insecure);
            assert_eq!(g.regions.len(), 4);
            assert!(g.tls.is_some());
            assert!(g.audit.is_some(), "the shipped gateway keeps an audit trail");
        } else {
            let n = yrd_node::NodeConfig::load(&path).unwrap();
            assert!(!n.insecure, "{}", path.display());
            assert!(n.tls.is_some());
            assert_eq!(n.allow, vec!["gateway".to_owned()]);
            nodes += 1;
        }
    }
    assert_eq!(nodes, 4);
}
