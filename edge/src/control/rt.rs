//! Real-time scheduling where the system permits it, and a clear word where
//! it does not.

/// What the control thread got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtStatus {
    /// SCHED_FIFO priority obtained, or why not.
    pub fifo: Result<i32, String>,
    /// CPU pinned to, or why not (`None` if not asked).
    pub cpu: Option<Result<usize, String>>,
    /// The process's other threads kept off that CPU: how many, or why not
    /// (`None` if not asked).
    pub alone: Option<Result<usize, String>>,
}

impl RtStatus {
    /// One line for logs and the dashboard.
    pub fn describe(&self) -> String {
        let sched = match &self.fifo {
            Ok(p) => format!("SCHED_FIFO priority {p}"),
            Err(e) => format!("normal priority ({e})"),
        };
        let alone = match &self.alone {
            Some(Ok(n)) => format!(" alone ({n} other threads kept off it)"),
            Some(Err(e)) => format!(" (other threads not kept off it: {e})"),
            None => String::new(),
        };
        match &self.cpu {
            Some(Ok(c)) => format!("{sched}, pinned to CPU {c}{alone}"),
            Some(Err(e)) => format!("{sched}, not pinned ({e})"),
            None => sched,
        }
    }
}

fn errno_text() -> String {
    std::io::Error::last_os_error().to_string()
}

/// Ask for SCHED_FIFO at `priority` and pin to `cpu` for the calling thread.
pub fn prepare_current_thread(priority: Option<i32>, cpu: Option<usize>) -> RtStatus {
    let fifo = match priority {
        None => Err("real-time scheduling disabled by control.rt_priority = 0".to_string()),
        Some(p) => {
            let param = libc::sched_param { sched_priority: p };
            // SAFETY: plain syscall on the calling thread with a valid param.
            let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
            if rc == 0 {
                Ok(p)
            } else {
                Err(format!(
                    "SCHED_FIFO refused: {}; grant CAP_SYS_NICE or LimitRTPRIO in the systemd unit",
                    errno_text()
                ))
            }
        }
    };
    let cpu = cpu.map(|c| {
        // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(c, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 {
                Ok(c)
            } else {
                Err(format!("sched_setaffinity to CPU {c} failed: {}", errno_text()))
            }
        }
    });
    RtStatus { fifo, cpu, alone: None }
}

/// Keep every other thread of the process off `cpu`, so that the calling
/// thread (pinned there) has it to itself: each thread's affinity becomes
/// the main thread's CPUs (the process's own set) but `cpu`. Threads started later inherit the mask of
/// the thread that starts them, so calling this before the node's other
/// threads start (or from the pinned thread, once they run) covers them
/// too. Returns how many threads were moved; refuses when `cpu` is the only
/// CPU left. Measured cause: on a 2-vCPU VM the control thread's wake-up
/// p99 went from 229–3 000 µs to 120–336 µs with its CPU to itself
/// (docs/benchmarks.md, "Refusal flood").
pub fn keep_other_threads_off(cpu: usize) -> Result<usize, String> {
    // The CPUs of the main thread (the process's own set) but `cpu`.
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it and
    // CPU_CLR/CPU_COUNT stay inside it.
    let others = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(libc::getpid(), std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(format!("sched_getaffinity failed: {}", errno_text()));
        }
        libc::CPU_CLR(cpu, &mut set);
        if libc::CPU_COUNT(&set) == 0 {
            return Err(format!(
                "CPU {cpu} is the only one the node may use: nothing else could run"
            ));
        }
        set
    };
    // SAFETY: plain syscall.
    let me = unsafe { libc::gettid() };
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| format!("cannot list /proc/self/task: {e}"))?;
    let mut moved = 0;
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        if tid == me {
            continue;
        }
        // SAFETY: plain syscall with a valid set; a thread that has ended
        // meanwhile answers ESRCH, which is fine.
        let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &others) };
        if rc == 0 {
            moved += 1;
        } else if std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) {
            return Err(format!("sched_setaffinity of thread {tid} failed: {}", errno_text()));
        }
    }
    Ok(moved)
}

/// Lock current and future memory of the process so the control thread never
/// takes a page fault. Returns why not, if refused.
pub fn lock_memory() -> Result<(), String> {
    // SAFETY: plain syscall.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "mlockall refused: {}; grant CAP_IPC_LOCK or LimitMEMLOCK=infinity",
            errno_text()
        ))
    }
}

/// Touch `bytes` of stack so its pages are mapped before the loop starts.
#[inline(never)]
pub fn prefault_stack(bytes: usize) {
    let mut buf = [0u8; 64 * 1024];
    let n = bytes.min(buf.len());
    for i in (0..n).step_by(4096) {
        // SAFETY: volatile write inside the local buffer, to defeat elision.
        unsafe { std::ptr::write_volatile(&mut buf[i], 1) };
    }
    std::hint::black_box(&buf);
}

/// Lower the calling thread's priority (nice value), for background workers.
pub fn set_nice(nice: i32) -> Result<(), String> {
    // SAFETY: gettid has no preconditions; setpriority on our own tid.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) };
    if rc == 0 { Ok(()) } else { Err(errno_text()) }
}
