//! The UDP side (S3): one socket per worker, all bound to the same address with SO_REUSEPORT
//! so the kernel spreads queries over them, each drained by its own task with its own
//! [`Worker`]. Memory is bounded: one receive and one send buffer per worker, the kernel's
//! socket buffers (enlarged, so bursts of queries in flight are not dropped), and the workers'
//! capped caches.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::server::{RECEIVE_BUFFER_LEN, Shared, Worker};

/// Kernel receive buffer per socket: a few MiB, or queries get dropped at a few hundred in
/// flight.
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Binds `workers` sockets to `addr` (the first one picks the port when `addr` has port 0).
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Vec<UdpSocket>> {
    let mut sockets = Vec::with_capacity(workers);
    let mut bound = addr;
    for _ in 0..workers.max(1) {
        let socket = Socket::new(Domain::for_address(bound), Type::DGRAM, Some(Protocol::UDP))?;
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
        socket.set_reuse_address(true)?;
        // Best effort: the kernel caps these at its configured maximum.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        let std_socket: std::net::UdpSocket = socket.into();
        bound = std_socket.local_addr()?;
        sockets.push(UdpSocket::from_std(std_socket)?);
    }
    Ok(sockets)
}

/// Unix time now, in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs one task per socket until `shutdown` turns true.
pub fn serve(shared: Arc<Shared>, sockets: Vec<UdpSocket>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    sockets
        .into_iter()
        .map(|socket| tokio::spawn(run_worker(Worker::new(shared.clone()), socket, shutdown.clone())))
        .collect()
}

async fn run_worker(mut worker: Worker, socket: UdpSocket, mut shutdown: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; RECEIVE_BUFFER_LEN];
    let mut reply = Vec::with_capacity(RECEIVE_BUFFER_LEN);
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buffer) => received,
            _ = shutdown.changed() => break,
        };
        let (len, from) = match received {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems; keep serving.
                tracing::debug!("udp receive: {e}");
                continue;
            }
        };
        let started = Instant::now();
        if worker.handle(&buffer[..len], from.ip(), SystemTime::now(), &mut reply) {
            if let Err(e) = socket.send_to(&reply, from).await {
                tracing::debug!("udp send to {from}: {e}");
            }
            worker.metrics().observe_latency(started.elapsed());
        }
        if *shutdown.borrow() {
            break;
        }
    }
}
