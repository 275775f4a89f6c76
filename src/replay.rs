//! Replays: a bounded copy of a pipeline over a range of ledgers, run beside the pipeline
//! itself (`flowctl replay`, `flowctl dlq replay`).
//!
//! The copy is the instance `NAME@FROM-TO`: the pipeline's own file resolved again with that
//! range and every port allocated afresh, so it has its own ports, process groups, cgroups and
//! run record, and the live pipeline is untouched. `@` cannot appear in a pipeline name, so an
//! instance name always says which pipeline it copies; the dead letters a copy reports belong
//! to that pipeline (a ledger failing again in a replay updates its letter).

use crate::plan::{HeldPorts, LedgerRange, PipelinePlan};
use crate::spec::{self, Diagnostics, ResolveOptions};

/// The largest range one replay takes: a replay is a job an operator follows to its end, and
/// bigger backfills are split (or run as their own bounded pipeline).
pub const MAX_REPLAY_LEDGERS: u32 = 10_000_000;

/// `NAME@FROM-TO`.
pub fn instance_name(pipeline: &str, range: ReplayRange) -> String {
    format!("{}@{}-{}", base_name(pipeline), range.from, range.to)
}

/// The pipeline an instance copies (the name itself when it is no replay).
pub fn base_name(name: &str) -> &str {
    name.split_once('@').map_or(name, |(base, _)| base)
}

/// Whether `name` is a replay instance.
pub fn is_instance(name: &str) -> bool {
    name.contains('@')
}

/// A closed range of ledgers, checked: `1 <= from <= to`, at most [`MAX_REPLAY_LEDGERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayRange {
    pub from: u32,
    pub to: u32,
}

impl ReplayRange {
    pub fn new(from: u32, to: u32) -> Result<Self, String> {
        if from == 0 {
            return Err("from_ledger 0: ledgers start at 1".into());
        }
        if to < from {
            return Err(format!("to_ledger {to} is before from_ledger {from}"));
        }
        if to - from >= MAX_REPLAY_LEDGERS {
            return Err(format!(
                "{from}-{to} is {} ledgers, over the {MAX_REPLAY_LEDGERS} one replay takes; \
                 split it",
                u64::from(to - from) + 1
            ));
        }
        Ok(ReplayRange { from, to })
    }
}

impl From<ReplayRange> for LedgerRange {
    fn from(r: ReplayRange) -> Self {
        LedgerRange {
            from: r.from,
            to: Some(r.to),
        }
    }
}

/// The copy of `pipeline` (a plan that runs) over `range`, resolved with `opts` (the
/// daemon's defaults). `running` are every plan the supervisor runs: the copy's ports are
/// none of theirs.
pub fn copy_of(
    pipeline: &PipelinePlan,
    range: ReplayRange,
    running: &[PipelinePlan],
    opts: ResolveOptions,
) -> Result<PipelinePlan, Diagnostics> {
    let mut parsed = spec::parse_str(&pipeline.source_file, &pipeline.config_yaml)?;
    parsed.name = instance_name(&pipeline.name, range);
    let opts = ResolveOptions {
        range: Some(range.into()),
        replay_copy: true,
        held_ports: HeldPorts::of(running),
        reserved_ports: running
            .iter()
            .flat_map(|p| &p.components)
            .flat_map(|c| c.ports.iter().map(|p| p.port).chain([c.health_port]))
            .collect(),
        ..opts
    };
    spec::resolve(&parsed, &opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const FIXED: &str = "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: ttp}\nspec:\n  \
        sources:\n    - id: src\n      command: x\n      health_port: 18088\n      \
        ports: [{name: grpc, containerPort: 50052}]\n  \
        sinks:\n    - id: out\n      command: x\n      inputs: [src]\n      \
        env: {ADDR: '${src.address}', START_LEDGER: '900'}\n";

    fn live() -> PipelinePlan {
        let p = spec::parse_str(Path::new("ttp.yaml"), FIXED).unwrap();
        spec::resolve(&p, &ResolveOptions::default()).unwrap()
    }

    #[test]
    fn a_copy_gets_its_own_ports_even_where_the_file_fixes_them_and_its_components_find_each_other()
    {
        let live = live();
        let copy = copy_of(
            &live,
            ReplayRange::new(10, 20).unwrap(),
            std::slice::from_ref(&live),
            ResolveOptions::default(),
        )
        .unwrap();
        assert_eq!(copy.name, "ttp@10-20");
        let src = &copy.components[0];
        assert_ne!(src.health_port, 18088);
        assert_ne!(src.ports[0].port, 50052);
        let grpc = src.ports[0].port;
        assert_eq!(copy.components[1].env["ADDR"], format!("127.0.0.1:{grpc}"));
        assert_eq!(copy.components[1].env["START_LEDGER"], "10");
        assert_eq!(copy.components[1].env["END_LEDGER"], "20");
        assert_eq!(copy.range.unwrap().to, Some(20));
        assert!(copy
            .components
            .iter()
            .all(|c| c.env["FLOWCTL_REPLAY"] == "ttp@10-20"));
    }

    #[test]
    fn an_instance_names_its_pipeline() {
        let r = ReplayRange::new(5, 5).unwrap();
        assert_eq!(instance_name("ttp", r), "ttp@5-5");
        assert_eq!(instance_name("ttp@1-2", r), "ttp@5-5");
        assert_eq!(base_name("ttp@5-5"), "ttp");
        assert_eq!(base_name("ttp"), "ttp");
        assert!(is_instance("ttp@5-5") && !is_instance("ttp"));
    }

    #[test]
    fn a_range_out_of_order_or_too_long_is_refused_naming_it() {
        assert!(ReplayRange::new(0, 3).unwrap_err().contains("start at 1"));
        assert!(ReplayRange::new(9, 3).unwrap_err().contains("before"));
        let e = ReplayRange::new(1, MAX_REPLAY_LEDGERS + 1).unwrap_err();
        assert!(e.contains("split it"), "{e}");
    }
}
