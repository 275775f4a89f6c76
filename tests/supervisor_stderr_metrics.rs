//! The count of lines dropped on an unread stderr is what `/metrics` shows. One test in its
//! own binary: it puts a full pipe in place of this process's stderr.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use flowctl::api::protocol::SupervisorStatus;

#[test]
fn lines_dropped_on_an_unread_stderr_are_counted_in_metrics_and_reported_once_it_is_read() {
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
    // Reading the pipe lets the writer go on; the notice follows the lines kept.
    let reading = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let n = reader.read(&mut buf).unwrap();
            all.extend_from_slice(&buf[..n]);
            if all.windows(17).any(|w| w == b"flowctl: dropped ") && all.ends_with(b"\n") {
                break;
            }
        }
        String::from_utf8(all).unwrap()
    });
    let text = reading.join().unwrap();
    // SAFETY: putting the saved stderr back.
    unsafe { libc::dup2(saved, 2) };
    let notice = text
        .lines()
        .find(|l| l.starts_with("flowctl: dropped "))
        .expect("a notice");
    assert_eq!(
        notice,
        flowctl::stderr::notice_line(dropped).trim_end(),
        "every drop is in the one notice"
    );
    let kept = text.lines().filter(|l| *l == line.trim_end()).count() as u64;
    assert_eq!(
        kept + dropped,
        40_000,
        "each line is either written or counted"
    );
}
