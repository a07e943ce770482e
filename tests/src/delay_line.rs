//! A user-space delay line: this kernel has no netem, so a fixed one-way delay is
//! built from two AF_PACKET sockets bridging two interfaces of a network namespace
//! the benchmark created. Every frame read on one side is held until its arrival
//! time plus the delay and then written, in arrival order, to the other side.
//!
//! Sockets use PACKET_VNET_HDR, so GSO/GRO super-frames cross as one unit with
//! their segmentation and checksum metadata intact (as through a tap device):
//! a 1 Gbit/s flow is about 2,000 frames a second, not 83,000. Our own writes are
//! not read back (PACKET_IGNORE_OUTGOING). Each direction has a reader thread
//! (timestamps frames at once) and a writer thread (sleeps to the deadline with a
//! 1 ns timer slack); [`Stats`] records how late writes were, which is the line's
//! own added jitter, and what the kernel dropped before we could read.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const ETH_P_ALL: u16 = 0x0003;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// virtio_net_hdr (10 bytes) + the largest GSO frame a veth hands over.
const FRAME_MAX: usize = 10 + 65_536 + 14 + 4;
/// Enough buffer for 20 ms of 10 Gbit/s.
const SOCK_BUF: libc::c_int = 64 << 20;

/// What one direction saw.
#[derive(Clone, Debug, Default)]
pub struct DirStats {
    pub frames: u64,
    pub bytes: u64,
    /// Frames the kernel dropped because our socket buffer was full.
    pub kernel_drops: u64,
    /// Whether the writer ran with SCHED_FIFO.
    pub realtime: bool,
    /// Frames the other side refused to take (send errors).
    pub send_errors: u64,
    /// How late each write was against its deadline, in microseconds (a sample
    /// of up to 100,000 frames, evenly taken).
    pub late_us: Vec<f64>,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub a_to_b: DirStats,
    pub b_to_a: DirStats,
}

pub struct DelayLine {
    stop: Arc<AtomicBool>,
    socks: Vec<Arc<OwnedFd>>,
    threads: Vec<JoinHandle<()>>,
    stats: [Arc<Mutex<DirStats>>; 2],
    pub one_way: Duration,
}

/// An AF_PACKET socket on `ifname` of network namespace `netns`, created on a
/// helper thread that enters the namespace (the socket stays bound to it).
fn packet_socket(netns: &str, ifname: &str) -> io::Result<OwnedFd> {
    let (netns, ifname) = (netns.to_string(), ifname.to_string());
    std::thread::spawn(move || -> io::Result<OwnedFd> {
        let ns = std::fs::File::open(format!("/var/run/netns/{netns}"))?;
        // SAFETY: setns on this helper thread only, with a valid namespace fd.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain socket(2) call; the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                (ETH_P_ALL.to_be()) as libc::c_int,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        for (level, opt, val) in [
            (libc::SOL_PACKET, PACKET_VNET_HDR, one),
            (libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, one),
            (libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, SOCK_BUF),
            (libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SOCK_BUF),
        ] {
            setsockopt(&sock, level, opt, val)?;
        }
        let cname = std::ffi::CString::new(ifname.clone()).unwrap();
        // SAFETY: valid NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::other(format!(
                "no interface {ifname} in {netns}"
            )));
        }
        // SAFETY: an all-zero sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: sll is a valid sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    })
    .join()
    .map_err(|_| io::Error::other("packet socket helper panicked"))?
}

fn setsockopt(s: &OwnedFd, level: i32, opt: i32, val: libc::c_int) -> io::Result<()> {
    // SAFETY: val is a c_int living across the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            &val as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Kernel drops on a packet socket since the last call (the counter resets on read).
fn kernel_drops(s: &OwnedFd) -> u64 {
    let mut st = [0u32; 2]; // struct tpacket_stats { tp_packets, tp_drops }
    let mut len = std::mem::size_of_val(&st) as u32;
    // SAFETY: st is large enough for tpacket_stats.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_STATISTICS,
            st.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 { st[1] as u64 } else { 0 }
}

/// SCHED_FIFO for the calling thread, so a frame's deadline is not missed by a
/// busy core's time slice; false when the kernel refuses (no CAP_SYS_NICE).
fn try_realtime() -> bool {
    let p = libc::sched_param { sched_priority: 10 };
    // SAFETY: pid 0 = the calling thread; p is a valid sched_param.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) == 0 }
}

fn set_timer_slack_1ns() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1);
    }
}

/// Reads frames from `from` until stopped, stamping each with its deadline.
fn reader(
    from: Arc<OwnedFd>,
    to_writer: mpsc::Sender<(Instant, Vec<u8>)>,
    one_way: Duration,
    stop: Arc<AtomicBool>,
) {
    // A short receive timeout lets the thread notice `stop`.
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: tv is a valid timeval.
    unsafe {
        libc::setsockopt(
            from.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    try_realtime();
    let mut buf = vec![0u8; FRAME_MAX];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: buf is writable for its length.
        let n = unsafe {
            libc::recv(
                from.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n <= 0 {
            continue;
        }
        let due = Instant::now() + one_way;
        if to_writer.send((due, buf[..n as usize].to_vec())).is_err() {
            return;
        }
    }
}

/// Writes frames to `to` at their deadlines, in order.
fn writer(
    from: Arc<OwnedFd>,
    to: Arc<OwnedFd>,
    frames: mpsc::Receiver<(Instant, Vec<u8>)>,
    stats: Arc<Mutex<DirStats>>,
    stop: Arc<AtomicBool>,
) {
    set_timer_slack_1ns();
    let realtime = try_realtime();
    let mut late = VecDeque::new();
    let mut seen = 0u64;
    let (mut n, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let Ok((due, frame)) = frames.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        // SAFETY: frame is readable for its length.
        let rc = unsafe {
            libc::send(
                to.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        let sent = Instant::now();
        if rc < 0 {
            errors += 1;
        } else {
            n += 1;
            bytes += frame.len().saturating_sub(10) as u64;
        }
        // Keep a bounded, evenly thinned sample of lateness.
        seen += 1;
        if late.len() < 100_000 || seen.is_multiple_of(16) {
            if late.len() >= 100_000 {
                late.pop_front();
            }
            late.push_back(sent.saturating_duration_since(due).as_secs_f64() * 1e6);
        }
    }
    let mut s = stats.lock().unwrap();
    s.frames = n;
    s.realtime = realtime;
    s.bytes = bytes;
    s.send_errors = errors;
    s.kernel_drops = kernel_drops(&from);
    s.late_us = late.into_iter().collect();
}

impl DelayLine {
    /// Bridges interfaces `a` and `b` of namespace `netns` with `one_way` delay in
    /// each direction. The interfaces must be up and have no addresses.
    pub fn start(netns: &str, a: &str, b: &str, one_way: Duration) -> io::Result<DelayLine> {
        let sa = Arc::new(packet_socket(netns, a)?);
        let sb = Arc::new(packet_socket(netns, b)?);
        // Reset the drop counters.
        kernel_drops(&sa);
        kernel_drops(&sb);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = [
            Arc::new(Mutex::new(DirStats::default())),
            Arc::new(Mutex::new(DirStats::default())),
        ];
        let mut threads = Vec::new();
        for (i, (from, to)) in [(sa.clone(), sb.clone()), (sb.clone(), sa.clone())]
            .into_iter()
            .enumerate()
        {
            let (tx, rx) = mpsc::channel();
            let st = stop.clone();
            let f = from.clone();
            threads.push(std::thread::spawn(move || reader(f, tx, one_way, st)));
            let st = stop.clone();
            let s = stats[i].clone();
            threads.push(std::thread::spawn(move || writer(from, to, rx, s, st)));
        }
        Ok(DelayLine {
            stop,
            socks: vec![sa, sb],
            threads,
            stats,
            one_way,
        })
    }

    /// Stops the threads and returns what each direction saw.
    pub fn stop(mut self) -> Stats {
        self.halt();
        Stats {
            a_to_b: self.stats[0].lock().unwrap().clone(),
            b_to_a: self.stats[1].lock().unwrap().clone(),
        }
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.socks.clear();
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.halt();
    }
}
