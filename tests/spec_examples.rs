//! The pipeline files of the seed documents, written for the Go flowctl, validate and resolve.

use std::path::{Path, PathBuf};

use flowctl::plan::ComponentPlan;
use flowctl::spec::{load_plan, Loaded, ResolveOptions};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn load(name: &str) -> Loaded {
    load_plan(&example(name), &ResolveOptions::default())
        .unwrap_or_else(|d| panic!("{name} does not validate:\n{d}"))
}

fn get<'a>(l: &'a Loaded, id: &str) -> &'a ComponentPlan {
    l.plan.components.iter().find(|c| c.id == id).unwrap()
}

#[test]
fn seed_stellar_token_pipeline_runs_the_bundled_components() {
    let l = load("seed-stellar-token-pipeline.yaml");
    assert_eq!(l.plan.name, "stellar-token-pipeline");
    assert_eq!(l.notices.len(), 2, "{}", l.notices);
    let src = get(&l, "stellar-live-source");
    assert_eq!(src.command, "stellar-live-source");
    assert_eq!(src.env["NETWORK"], "testnet");
    assert_eq!(src.env["BACKEND"], "synthetic");
    let proc = get(&l, "token-transfer-processor");
    assert_eq!(proc.command, "ttp-processor");
    assert_eq!(
        proc.env["NETWORK_PASSPHRASE"],
        "Public Global Stellar Network ; September 2015"
    );
    let grpc = src.ports.iter().find(|p| p.name == "grpc").unwrap().port;
    assert_eq!(
        proc.env["SOURCE_SERVICE_ADDRESS"],
        format!("127.0.0.1:{grpc}")
    );
    assert_eq!(proc.depends_on, ["stellar-live-source"]);
}

#[test]
fn seed_ttp_processing_pipeline_keeps_its_ports_and_runs_bundled_programs_on_local_data() {
    let l = load("seed-ttp-processing-pipeline.yaml");
    assert_eq!(l.plan.name, "ttp-processing-pipeline");
    // One notice per ignored `image`.
    assert_eq!(l.notices.len(), 3, "{}", l.notices);
    let order: Vec<&str> = l.plan.components.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        order,
        ["stellar-live-source", "ttp-processor", "consumer-app"]
    );
    let src = get(&l, "stellar-live-source");
    assert_eq!((src.health_port, src.ports[0].port), (8088, 50051));
    assert_eq!(src.ports[0].name, "grpc");
    let proc = get(&l, "ttp-processor");
    assert_eq!(proc.env["LIVE_SOURCE_ENDPOINT"], "127.0.0.1:50051");
    assert_eq!(proc.env["SOURCE_SERVICE_ADDRESS"], "127.0.0.1:50051");
    let sink = get(&l, "consumer-app");
    assert_eq!(sink.env["TTP_SERVICE_ADDRESS"], "127.0.0.1:50052");
    // The bundled programs stand in for the containers' `./…` and `npm start`.
    assert_eq!(src.command, "stellar-live-source");
    assert_eq!(proc.command, "ttp-processor");
    assert_eq!(
        (sink.command.as_str(), sink.args.as_slice()),
        ("ttp-sink", &[][..])
    );
    assert_eq!(sink.env["SINK"], "console");
    assert_eq!(sink.resources.memory_max, Some(256 << 20));

    // Local data only, and a bounded range the sink ends on.
    assert_eq!(src.env["BACKEND"], "synthetic");
    assert!(!src.env.contains_key("DATALAKE_URL"));
    assert_eq!(
        (
            src.env["START_LEDGER"].as_str(),
            src.env["END_LEDGER"].as_str()
        ),
        ("2", "21")
    );
    assert_eq!(
        (
            sink.env["START_LEDGER"].as_str(),
            sink.env["END_LEDGER"].as_str()
        ),
        ("2", "21")
    );
}
