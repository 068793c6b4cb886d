//! Real-time scheduling where the system permits it, and a clear word where
//! it does not.

/// What the control thread got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtStatus {
    /// SCHED_FIFO priority obtained, or why not.
    pub fifo: Result<i32, String>,
    /// CPU pinned to, or why not (`None` if not asked).
    pub cpu: Option<Result<usize, String>>,
}

impl RtStatus {
    /// One line for logs and the dashboard.
    pub fn describe(&self) -> String {
        let sched = match &self.fifo {
            Ok(p) => format!("SCHED_FIFO priority {p}"),
            Err(e) => format!("normal priority ({e})"),
        };
        match &self.cpu {
            Some(Ok(c)) => format!("{sched}, pinned to CPU {c}"),
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
    RtStatus { fifo, cpu }
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
