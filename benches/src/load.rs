//! A bounded UDP load generator on loopback: keeps `in_flight` queries outstanding over
//! several sockets, stops after `max_queries` replies or `max_duration`, whichever comes first,
//! and reports replies per second, latency percentiles, and the CPU time the server process
//! spent (from `/proc/<pid>/stat`), per reply.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// What to send and for how long.
pub struct Load<'q> {
    /// The server.
    pub target: SocketAddr,
    /// Query datagrams to cycle through (their request id, bytes 8..16, is rewritten).
    pub queries: &'q [Vec<u8>],
    /// Queries kept outstanding at once.
    pub in_flight: usize,
    /// Stop after this many replies.
    pub max_queries: u64,
    /// Stop after this long, whatever the count.
    pub max_duration: Duration,
    /// The server's process id, for its CPU time.
    pub server_pid: u32,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Replies received.
    pub replies: u64,
    /// Queries sent and never answered (lost, or still in flight at the end).
    pub unanswered: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// CPU time (user + system) the server process used during the run.
    pub server_cpu: Duration,
    /// Mean reply length in bytes.
    pub mean_reply_len: f64,
}

impl Report {
    /// Replies per second.
    pub fn rate(&self) -> f64 {
        self.replies as f64 / self.elapsed.as_secs_f64()
    }

    /// Server CPU time per reply.
    pub fn cpu_per_reply(&self) -> Duration {
        self.server_cpu / u32::try_from(self.replies.max(1)).unwrap_or(u32::MAX)
    }
}

/// CPU time (user + system) of process `pid` so far, from `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32) -> std::io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let total = ticks(11) + ticks(12);
    let hz = clock_ticks_per_second();
    Ok(Duration::from_secs_f64(total as f64 / hz))
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

const SOCKETS: usize = 8;

/// Runs the load and reports.
pub fn run(load: &Load<'_>) -> std::io::Result<Report> {
    let sockets: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_nonblocking(true)?;
            socket.connect(load.target)?;
            Ok(socket)
        })
        .collect::<std::io::Result<_>>()?;
    let cpu_before = process_cpu(load.server_pid)?;
    let started = Instant::now();
    let mut sent_at: HashMap<u64, Instant> = HashMap::with_capacity(load.in_flight * 2);
    let mut latencies: Vec<Duration> = Vec::new();
    let (mut next_id, mut replies, mut reply_bytes) = (0u64, 0u64, 0u64);
    let mut buffer = [0u8; 2048];
    let mut last_progress = Instant::now();
    while replies < load.max_queries && started.elapsed() < load.max_duration {
        // Top up the window.
        while sent_at.len() < load.in_flight && next_id < load.max_queries + load.in_flight as u64 {
            let mut datagram = load.queries[(next_id as usize) % load.queries.len()].clone();
            datagram[8..16].copy_from_slice(&next_id.to_be_bytes());
            let socket = &sockets[(next_id as usize) % SOCKETS];
            if socket.send(&datagram).is_err() {
                break;
            }
            sent_at.insert(next_id, Instant::now());
            next_id += 1;
        }
        let mut got = false;
        for socket in &sockets {
            while let Ok(len) = socket.recv(&mut buffer) {
                got = true;
                if len < 16 {
                    continue;
                }
                let id = u64::from_be_bytes(buffer[8..16].try_into().unwrap_or([0; 8]));
                if let Some(at) = sent_at.remove(&id) {
                    latencies.push(at.elapsed());
                    replies += 1;
                    reply_bytes += len as u64;
                }
            }
        }
        if got {
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_millis(200) {
            // Replies lost (buffer overflow): forget them so the window refills.
            sent_at.clear();
            last_progress = Instant::now();
        }
    }
    let elapsed = started.elapsed();
    let server_cpu = process_cpu(load.server_pid)?.saturating_sub(cpu_before);
    latencies.sort();
    let pick = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    Ok(Report {
        replies,
        unanswered: next_id.saturating_sub(replies),
        elapsed,
        p50: pick(0.50),
        p99: pick(0.99),
        server_cpu,
        mean_reply_len: reply_bytes as f64 / replies.max(1) as f64,
    })
}
