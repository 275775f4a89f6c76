//! Per-component cgroups on the real cgroup v2 tree. Each test builds a throw-away subtree
//! under its own cgroup (the stand-in for the unit's delegated one), moves itself into its
//! `supervisor` leaf as the daemon does, and removes it all at the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flowctl::plan::Resources;
use flowctl::systemd::cgroup::{self, CgroupTree, Controller, NotEnforced};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// A test subtree; dropping it moves the test back and removes the subtree.
struct Subtree {
    home: PathBuf,
    root: PathBuf,
}

impl Subtree {
    fn new(tag: &str) -> Option<(Subtree, CgroupTree)> {
        let home = match cgroup::own_cgroup_dir() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("skipped: no cgroup v2 here ({e})");
                return None;
            }
        };
        let root = home.join(format!("flowctl-test-{tag}-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&root) {
            eprintln!(
                "skipped: cannot create a cgroup under {}: {e}",
                home.display()
            );
            return None;
        }
        let sub = Subtree { home, root };
        let tree = CgroupTree::take_over(&sub.root).expect("take over the subtree");
        Some((sub, tree))
    }
}

impl Drop for Subtree {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.home.join("cgroup.procs"),
            std::process::id().to_string(),
        );
        for _ in 0..100 {
            let out = Command::new("find")
                .arg(&self.root)
                .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", "+"])
                .output();
            if out.is_err() || !self.root.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap()
}

fn rel(p: &Path) -> String {
    let mount = cgroup::cgroup2_mount().unwrap();
    format!("/{}", p.strip_prefix(mount).unwrap().display())
}

#[test]
fn supervisor_moves_itself_into_a_leaf_of_its_own() {
    let Some((sub, tree)) = Subtree::new("leaf") else {
        return;
    };
    assert_eq!(
        cgroup_of(std::process::id()),
        rel(&sub.root.join("supervisor"))
    );
    assert_eq!(tree.root(), sub.root);
}

#[test]
fn kill_reaches_a_double_forked_grandchild_that_left_the_process_group() {
    let Some((sub, tree)) = Subtree::new("kill") else {
        return;
    };
    // Reap the orphaned grandchild ourselves, so we can see how it died.
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let cg = tree.component("ttp", "daemonizer").unwrap();
    assert_eq!(cg.path(), sub.root.join("ttp/daemonizer"));
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "setsid sh -c 'sleep 300 & echo $! > {0}.tmp; mv {0}.tmp {0}' & exit 0",
        pidfile.display()
    ));
    cg.join_on_exec().unwrap().install(&mut cmd);
    let status = cmd.status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pidfile.exists() {
        assert!(Instant::now() < deadline, "grandchild never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let gc: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // It escaped the process group and session, but not the cgroup.
    assert_eq!(cgroup_of(gc), rel(cg.path()));
    assert_ne!(
        nix::unistd::getpgid(Some(Pid::from_raw(gc as i32))).unwrap(),
        nix::unistd::getpgrp()
    );
    assert!(cg.populated().unwrap());
    assert!(cg.pids().unwrap().contains(&gc));

    cg.kill(Duration::from_secs(5)).unwrap();
    assert!(!cg.populated().unwrap());
    // Reap whatever was orphaned to us; the sleeper must be among them, killed by SIGKILL.
    let mut saw = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !saw && Instant::now() < deadline {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() as u32 == gc => {
                assert_eq!(sig, nix::sys::signal::Signal::SIGKILL);
                saw = true;
            }
            Ok(_) => {}
            Err(e) => panic!("waitpid: {e} before the grandchild was reaped"),
        }
    }
    assert!(saw);
    cg.remove().unwrap();
    assert!(!cg.path().exists());
}

#[test]
fn cpu_time_is_read_from_cpu_stat() {
    let Some((_sub, tree)) = Subtree::new("cpu") else {
        return;
    };
    let cg = tree.component("p", "busy").unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"]);
    cg.join_on_exec().unwrap().install(&mut cmd);
    assert!(cmd.status().unwrap().success());
    let usage = cg.usage().unwrap();
    assert!(usage.cpu_usec.unwrap() > 10_000, "{usage:?}");
    if !tree.enabled().contains(&Controller::Memory) {
        assert_eq!(usage.memory_bytes, None);
    }
}

#[test]
fn limits_apply_where_the_controller_exists_and_are_reported_where_not() {
    let Some((_sub, tree)) = Subtree::new("limits") else {
        return;
    };
    let cg = tree.component("p", "c").unwrap();
    let missing = cg
        .apply_limits(&Resources {
            memory_max: Some(64 << 20),
            cpu_max: Some(0.5),
            pids_max: Some(32),
        })
        .unwrap();
    for (c, file, want) in [
        (Controller::Memory, "memory.max", "67108864"),
        (Controller::Cpu, "cpu.max", "50000 100000"),
        (Controller::Pids, "pids.max", "32"),
    ] {
        if tree.enabled().contains(&c) {
            let got = std::fs::read_to_string(cg.path().join(file)).unwrap();
            assert_eq!(got.trim(), want);
            assert!(!missing.contains(&NotEnforced(c)));
        } else {
            assert!(missing.contains(&NotEnforced(c)), "{missing:?}");
            assert!(tree.not_enforced().contains(&NotEnforced(c)));
            eprintln!("{}", NotEnforced(c));
        }
    }
    // Nothing asked for, nothing reported.
    assert!(cg.apply_limits(&Resources::default()).unwrap().is_empty());
}

#[test]
fn oom_kill_shows_in_memory_events() {
    let Some((_sub, tree)) = Subtree::new("oom") else {
        return;
    };
    if !tree.enabled().contains(&Controller::Memory) {
        eprintln!("skipped: {}", NotEnforced(Controller::Memory));
        return;
    }
    let cg = tree.component("p", "hog").unwrap();
    let missing = cg
        .apply_limits(&Resources {
            memory_max: Some(32 << 20),
            ..Resources::default()
        })
        .unwrap();
    assert!(missing.is_empty());
    std::fs::write(cg.path().join("memory.swap.max"), "0").ok();
    assert_eq!(cg.oom_kills().unwrap(), Some(0));
    let mut cmd = Command::new("sh");
    // Grows a shell variable until the kernel kills it.
    cmd.args(["-c", "x=xxxxxxxxxxxxxxxx; while :; do x=$x$x; done"]);
    cg.join_on_exec().unwrap().install(&mut cmd);
    let status = cmd.status().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert!(cg.oom_kills().unwrap().unwrap() >= 1);
}

#[test]
fn root_cgroup_outside_systemd_is_not_taken_as_delegated() {
    let own = cgroup::own_cgroup_dir();
    let at_root = own
        .as_ref()
        .is_ok_and(|p| Some(p.clone()) == cgroup::cgroup2_mount());
    if !at_root || std::env::var_os("INVOCATION_ID").is_some() {
        eprintln!("skipped: this process is not in the root cgroup outside a unit");
        return;
    }
    assert!(matches!(
        cgroup::detect(),
        cgroup::Detection::NotDelegated(why) if why.contains("Delegate=yes")
    ));
}

#[test]
fn without_delegation_containment_falls_back_to_process_groups_and_notes_limits() {
    let c = cgroup::Containment::setup(false);
    let cgroup::Containment::ProcessGroups { reason } = &c else {
        panic!("cgroups were turned off, got {c:?}");
    };
    assert!(reason.contains("turned off"), "{reason}");
    let notes = c.status_notes(&Resources {
        memory_max: Some(1 << 30),
        cpu_max: None,
        pids_max: Some(100),
    });
    assert_eq!(
        notes,
        [
            "limits not enforced: no memory controller",
            "limits not enforced: no pids controller"
        ]
    );
}

#[path = "sandbox/mod.rs"]
mod sandbox;

const IN_UNIT: &str = "FLOWCTL_TEST_IN_UNIT";

/// Under a real systemd, a `Delegate=yes` service's cgroup is detected as delegated, taken
/// over, and a double-forked grandchild of a component is killed with its cgroup.
#[test]
fn under_systemd_a_delegated_unit_cgroup_is_detected_and_contains_components() {
    const TEST: &str = "under_systemd_a_delegated_unit_cgroup_is_detected_and_contains_components";
    if std::env::var(IN_UNIT).as_deref() == Ok(TEST) {
        let c = cgroup::Containment::setup(true);
        let cgroup::Containment::Cgroups(tree) = &c else {
            panic!("expected a delegated cgroup, got {c:?}");
        };
        assert!(tree
            .root()
            .ends_with("system.slice/flowctl-cgroup-test.service"));
        assert_eq!(
            cgroup_of(std::process::id()),
            "/system.slice/flowctl-cgroup-test.service/supervisor"
        );
        nix::sys::prctl::set_child_subreaper(true).unwrap();
        let cg = tree.component("ttp", "forker").unwrap();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "setsid sh -c 'sleep 300 & echo $! > /tmp/gc.pid' & exit 0",
        ]);
        cg.join_on_exec().unwrap().install(&mut cmd);
        assert!(cmd.status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string("/tmp/gc.pid").map_or(true, |s| s.trim().is_empty()) {
            assert!(Instant::now() < deadline, "grandchild never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        let gc: u32 = std::fs::read_to_string("/tmp/gc.pid")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            cgroup_of(gc),
            "/system.slice/flowctl-cgroup-test.service/ttp/forker"
        );
        cg.kill(Duration::from_secs(5)).unwrap();
        loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() as u32 == gc => {
                    assert_eq!(sig, nix::sys::signal::Signal::SIGKILL);
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("waitpid: {e} before the grandchild was reaped"),
            }
        }
        println!("IN-UNIT CHECKS PASSED");
        return;
    }
    let Some(sb) = sandbox::Sandbox::start() else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let out = sb.run(&format!(
        "systemd-run --quiet --wait --pipe --unit=flowctl-cgroup-test -p Delegate=yes \
         -E {IN_UNIT}={TEST} {} --exact {TEST} --nocapture --test-threads=1",
        exe.display()
    ));
    let shown = sandbox::text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("IN-UNIT CHECKS PASSED"), "{shown}");
}

/// The supervisor puts each component in its cgroup; when the component ends, a daemon it
/// double-forked out of its process group ends with it.
#[test]
fn supervised_component_runs_in_its_cgroup_and_takes_its_escaped_daemon_along() {
    let Some((sub, tree)) = Subtree::new("sup") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("daemon.pid");
    let yaml = format!(
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {{name: demo}}\nspec:\n  sources:\n    \
         - id: forker\n      command: sh\n      args: [\"-c\", \"setsid sh -c 'sleep 300 & echo $! > {0}.tmp; mv {0}.tmp {0}'; exec sleep 1000\"]\n",
        pidfile.display()
    );
    let parsed = flowctl::spec::parse_str(&dir.path().join("p.yaml"), &yaml).unwrap();
    let plan = flowctl::spec::resolve(&parsed, &Default::default()).unwrap();
    let mut options = flowctl::supervisor::SupervisorOptions::new(dir.path().join("run"));
    options.cgroups = Some(std::sync::Arc::new(tree));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let daemon_pid = rt.block_on(async {
        let (sup, handle) = flowctl::supervisor::Supervisor::new(vec![plan], options).unwrap();
        let run = tokio::spawn(sup.run());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pidfile.exists() {
            assert!(Instant::now() < deadline, "the daemon never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let daemon: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(cgroup_of(daemon), rel(&sub.root.join("demo/forker")));
        let status = handle.status().await.unwrap();
        let main = status.pipelines[0].components[0].pid.unwrap() as u32;
        assert_eq!(cgroup_of(main), rel(&sub.root.join("demo/forker")));
        handle.shutdown();
        run.await.unwrap().unwrap();
        daemon
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{daemon_pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{daemon_pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
    {
        assert!(
            Instant::now() < deadline,
            "the escaped daemon outlived its component"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
