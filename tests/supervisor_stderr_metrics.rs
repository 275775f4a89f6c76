//! The count of lines dropped on an unread stderr is what `/metrics` shows. One test in its
//! own binary: it puts a full pipe in place of this process's stderr.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::Duration;

use flowctl::api::protocol::SupervisorStatus;

#[test]
fn lines_dropped_on_an_unread_stderr_are_counted_in_metrics_and_reported_once_it_is_read_again() {
    let (mut reader, writer) = std::io::pipe().unwrap();
    // SAFETY: dup2 onto fd 2 of this process (this binary's only test); no memory involved.
    let saved = unsafe { libc::dup(2) };
    assert!(saved >= 0);
    assert_eq!(unsafe { libc::dup2(writer.as_raw_fd(), 2) }, 2);
    drop(writer);
    let line = format!("{}\n", "y".repeat(99));
    // 4 MiB of lines: more than the pipe and the queue hold while nobody reads.
    for _ in 0..40_000 {
        flowctl::stderr::write(line.as_bytes());
    }
    let dropped = flowctl::stderr::dropped_total();
    assert!(dropped > 0, "nothing was dropped");
    let metrics = flowctl::metrics::render(SupervisorStatus { pipelines: vec![] }).unwrap();
    let sample = metrics
        .lines()
        .find_map(|l| l.strip_prefix("flowctl_stderr_lines_dropped_total "))
        .unwrap_or_else(|| panic!("no drop counter in\n{metrics}"));
    assert_eq!(sample.parse::<u64>().unwrap(), dropped);
    // Reading the pipe lets the writer go on, until everything queued is written; then the
    // pipe is closed (fd 2 back to what it was) and the reader sees its end.
    let reading = std::thread::spawn(move || {
        let mut all = String::new();
        reader.read_to_string(&mut all).unwrap();
        all
    });
    assert!(
        flowctl::stderr::flush(Duration::from_secs(30)),
        "the queue never emptied while its stderr was read"
    );
    // SAFETY: putting the saved stderr back, which closes the pipe's last write end.
    unsafe { libc::dup2(saved, 2) };
    let text = reading.join().unwrap();
    // One notice after each stretch of drops, where the lines went missing.
    let reported: u64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("flowctl: dropped "))
        .map(|rest| {
            assert!(
                rest.ends_with(" of output: stderr was not being read"),
                "{rest}"
            );
            rest.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(reported, dropped, "every dropped line is reported");
    let kept = text.lines().filter(|l| *l == line.trim_end()).count() as u64;
    assert_eq!(
        kept + dropped,
        40_000,
        "each line is either written or counted"
    );
}
