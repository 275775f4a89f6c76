//! The supervisor's own open-file limit: raised to the hard limit at start, so many
//! connections and children cannot exhaust its fds, while children get the original soft
//! limit back (many programs misbehave with a huge one) unless their plan sets `nofile`.

use std::sync::OnceLock;

static ORIGINAL_SOFT: OnceLock<Option<u64>> = OnceLock::new();

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, once; remembers the soft limit it
/// replaced. Returns the limit now in force.
pub fn raise() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    let original = lim.rlim_cur;
    ORIGINAL_SOFT.get_or_init(|| {
        if lim.rlim_cur >= lim.rlim_max {
            return None;
        }
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        (unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0).then_some(original)
    });
    current_soft()
}

/// The soft limit `raise` replaced, when it raised one: what children start with.
pub fn original_soft() -> Option<u64> {
    ORIGINAL_SOFT.get().copied().flatten()
}

fn current_soft() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_cur
}
