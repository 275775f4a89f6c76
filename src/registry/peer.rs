//! Which supervised process is on the other end of a loopback TCP connection.
//!
//! The kernel knows: `/proc/net/tcp` maps the connection's two addresses to a socket inode,
//! and `/proc/PID/fd` shows which processes hold that socket. A process belongs to a
//! supervised component when it is, or descends from, the component's main process, or is in
//! its process group (a double-forked daemon re-parented away from it), or in its own cgroup
//! (one that also left the group). Only those processes are searched, so the cost is bounded
//! by what this supervisor runs. A process of another user cannot be inspected and is
//! therefore never taken for a child.

use std::collections::HashMap;
use std::net::SocketAddr;

use procfs::process::{FDTarget, Process};

use super::state::SupervisedComponent;

/// The supervised component whose process (or descendant) holds the client end of the
/// connection `ours` ← `theirs`, if any.
pub fn component_behind(
    ours: SocketAddr,
    theirs: SocketAddr,
    supervised: &HashMap<u32, SupervisedComponent>,
) -> Option<SupervisedComponent> {
    if supervised.is_empty() || !theirs.ip().is_loopback() {
        return None;
    }
    let inode = client_socket_inode(ours, theirs)?;
    let procs = process_table();
    let parents: HashMap<u32, u32> = procs.iter().map(|(&pid, p)| (pid, p.ppid)).collect();
    let mut unclaimed = Vec::new();
    for (&pid, p) in &procs {
        let found = supervised_ancestor(pid, p.ppid, &parents, supervised)
            .or_else(|| supervised.get(&p.pgrp));
        match found {
            Some(component) if holds_socket(pid, inode) => return Some(component.clone()),
            Some(_) => {}
            None => unclaimed.push(pid),
        }
    }
    // Last, the components' own cgroups: only where they have one apart from ours.
    let ours_cgroup = cgroup_of(std::process::id());
    let by_cgroup: HashMap<String, &SupervisedComponent> = supervised
        .iter()
        .filter_map(|(&pid, c)| Some((cgroup_of(pid)?, c)))
        .filter(|(cg, _)| Some(cg) != ours_cgroup.as_ref())
        .collect();
    if by_cgroup.is_empty() {
        return None;
    }
    unclaimed.into_iter().find_map(|pid| {
        let component = by_cgroup.get(&cgroup_of(pid)?)?;
        holds_socket(pid, inode).then(|| (*component).clone())
    })
}

/// A process's parent and process group.
struct Proc {
    ppid: u32,
    pgrp: u32,
}

/// The cgroup v2 path of `pid`.
fn cgroup_of(pid: u32) -> Option<String> {
    let groups = Process::new(pid as i32).ok()?.cgroups().ok()?;
    groups
        .into_iter()
        .find(|g| g.hierarchy == 0)
        .map(|g| g.pathname)
}

/// The inode of the socket whose local address is `theirs` and remote address is `ours`.
fn client_socket_inode(ours: SocketAddr, theirs: SocketAddr) -> Option<u64> {
    let tables = match theirs {
        SocketAddr::V4(_) => [procfs::net::tcp(), procfs::net::tcp6()],
        SocketAddr::V6(_) => [procfs::net::tcp6(), procfs::net::tcp()],
    };
    tables
        .into_iter()
        .filter_map(Result::ok)
        .flatten()
        .find(|e| same(e.local_address, theirs) && same(e.remote_address, ours))
        .map(|e| e.inode)
}

/// Equal, counting `::ffff:a.b.c.d` as `a.b.c.d` (a v6 socket talking v4).
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |s: SocketAddr| (s.ip().to_canonical(), s.port());
    canonical(a) == canonical(b)
}

/// Every process this one can see, by pid.
fn process_table() -> HashMap<u32, Proc> {
    let Ok(all) = procfs::process::all_processes() else {
        return HashMap::new();
    };
    all.filter_map(Result::ok)
        .filter_map(|p| p.stat().ok())
        .map(|s| {
            (
                s.pid as u32,
                Proc {
                    ppid: s.ppid as u32,
                    pgrp: s.pgrp as u32,
                },
            )
        })
        .collect()
}

/// The supervised component `pid` is, or descends from.
fn supervised_ancestor<'a>(
    pid: u32,
    ppid: u32,
    parents: &HashMap<u32, u32>,
    supervised: &'a HashMap<u32, SupervisedComponent>,
) -> Option<&'a SupervisedComponent> {
    if let Some(c) = supervised.get(&pid) {
        return Some(c);
    }
    let mut current = ppid;
    // Bounded: a pid table always ends at 0 or 1, but a racing read must not loop forever.
    for _ in 0..parents.len() {
        if let Some(c) = supervised.get(&current) {
            return Some(c);
        }
        match parents.get(&current) {
            Some(&next) if next != current && current > 1 => current = next,
            _ => return None,
        }
    }
    None
}

fn holds_socket(pid: u32, inode: u64) -> bool {
    let Ok(process) = Process::new(pid as i32) else {
        return false;
    };
    let Ok(fds) = process.fd() else {
        return false;
    };
    fds.filter_map(Result::ok)
        .any(|fd| matches!(fd.target, FDTarget::Socket(i) if i == inode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::process::Command;

    fn component(name: &str) -> SupervisedComponent {
        SupervisedComponent {
            pipeline: "p".into(),
            component: name.into(),
        }
    }

    #[test]
    fn a_connection_from_a_supervised_child_is_found_and_one_from_elsewhere_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // A real child process that connects and waits: bash's /dev/tcp keeps it simple.
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "exec 3<>/dev/tcp/127.0.0.1/{}; sleep 30",
                addr.port()
            ))
            .spawn()
            .unwrap();
        let (_conn, theirs) = listener.accept().unwrap();
        let supervised = HashMap::from([(child.id(), component("source"))]);
        assert_eq!(
            component_behind(addr, theirs, &supervised),
            Some(component("source"))
        );
        // A sibling that holds no such socket is not taken for its owner.
        let mut sibling = Command::new("sleep").arg("30").spawn().unwrap();
        let someone_else = HashMap::from([(sibling.id(), component("sink"))]);
        assert_eq!(component_behind(addr, theirs, &someone_else), None);
        sibling.kill().unwrap();
        sibling.wait().unwrap();

        // This process's own connection is not the child's.
        let _mine = std::net::TcpStream::connect(addr).unwrap();
        let (_c, my_addr) = listener.accept().unwrap();
        assert_eq!(component_behind(addr, my_addr, &supervised), None);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_process_re_parented_away_from_its_component_is_found_by_its_process_group() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The outer bash (the supervised pid, leader of its own group) exits at once; the
        // subshell holding the connection is re-parented, and only its group still says whose
        // it is.
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("bash")
            .process_group(0)
            .arg("-c")
            .arg(format!(
                "( exec 3<>/dev/tcp/127.0.0.1/{}; sleep 30 ) & exit 0",
                addr.port()
            ))
            .spawn()
            .unwrap();
        let (_conn, theirs) = listener.accept().unwrap();
        let leader = child.id();
        child.wait().unwrap();
        let supervised = HashMap::from([(leader, component("processor"))]);
        assert_eq!(
            component_behind(addr, theirs, &supervised),
            Some(component("processor"))
        );
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(leader as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    #[test]
    fn a_grandchild_counts_as_its_supervised_ancestor() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // bash forks a subshell that holds the connection; the supervised pid is the outer bash.
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("bash")
            .process_group(0)
            .arg("-c")
            .arg(format!(
                "( exec 3<>/dev/tcp/127.0.0.1/{}; sleep 30 ) & wait",
                addr.port()
            ))
            .spawn()
            .unwrap();
        let (_conn, theirs) = listener.accept().unwrap();
        let supervised = HashMap::from([(child.id(), component("processor"))]);
        assert_eq!(
            component_behind(addr, theirs, &supervised),
            Some(component("processor"))
        );
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        child.wait().unwrap();
    }
}
