//! The UDP side: one socket per worker, all bound to the same address with SO_REUSEPORT so
//! the kernel spreads queries over them (a second server on the same address is refused), each
//! drained by its own task with its own [`Worker`]. A worker takes in the datagrams waiting on
//! its socket with one system call (`recvmmsg` through `quinn-udp`), and again while more are
//! waiting and answers wait for a signature (within a bound in count and time), answers them
//! together — the new answers among them under one batch signature — and sends the replies,
//! again with one system call for many of them (`sendmmsg` through `rustix`, on Linux). Memory
//! is bounded: one batch of receive buffers and the reply buffers of one gathering per worker,
//! the kernel's socket buffers (enlarged, so bursts of queries in flight are not dropped), and
//! the workers' capped caches.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quinn_udp::RecvMeta;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::server::{RECEIVE_BUFFER_LEN, Shared, Worker};

/// Kernel receive buffer per socket: a few MiB, or queries get dropped at a few hundred in
/// flight.
pub const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Binds `workers` sockets to `addr` (the first one picks the port when `addr` has port 0).
///
/// The workers share the port through `SO_REUSEPORT`, which would also let another process of
/// the same user join the group and take part of the queries. So the address is first bound by
/// a probe socket without any sharing option: if anything holds the address already (another
/// server), that fails with [`io::ErrorKind::AddrInUse`] and nothing is started. The probe is
/// closed just before the workers' sockets take its place.
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Vec<UdpSocket>> {
    let probe = std::net::UdpSocket::bind(addr)?;
    let mut bound = probe.local_addr()?;
    drop(probe);
    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let socket = Socket::new(Domain::for_address(bound), Type::DGRAM, Some(Protocol::UDP))?;
        #[cfg(unix)]
        socket.set_reuse_port(true)?;
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

async fn run_worker(worker: Worker, socket: UdpSocket, shutdown: watch::Receiver<bool>) {
    match quinn_udp::UdpSocketState::new((&socket).into()) {
        Ok(state) => run_batched(worker, socket, &state, shutdown).await,
        Err(e) => {
            tracing::warn!("no batched receive on this socket ({e}): one datagram per system call");
            run_single(worker, socket, shutdown).await;
        }
    }
}

/// Most answers a worker gathers for one signature before it signs: a full batch.
const GATHER_ANSWERS: usize = upgram_core::limits::MAX_BATCH_LEN;
/// Most datagrams a worker takes in before it signs and sends, whatever they need.
const GATHER_DATAGRAMS: usize = 4 * quinn_udp::BATCH_SIZE;
/// Longest a worker keeps taking in datagrams already waiting on its socket before it signs
/// and sends: a lone query never waits (the socket is empty at once), a burst waits at most
/// this long for its replies. Long enough for a full batch of new answers under load (about
/// 64 answers of work), so one Ed25519 signature covers many answers.
const GATHER_TIME: Duration = Duration::from_millis(1);

/// Datagrams one gathering takes in from which the worker counts as under load: the next
/// gathering then waits, within [`GATHER_TIME`], for datagrams still on their way when its
/// socket is momentarily empty, rather than signing a small batch.
const LOADED_GATHER: usize = 8;

/// Most replies one `sendmmsg` call sends.
#[cfg(target_os = "linux")]
const SEND_BATCH: usize = GATHER_DATAGRAMS;

/// Where a reply goes.
struct Slot {
    to: SocketAddr,
    /// The length of the datagram it answers (for the debug log).
    received: usize,
}

/// Receives up to [`quinn_udp::BATCH_SIZE`] datagrams per system call (`recvmmsg` on Linux,
/// with UDP GRO where the kernel offers it). While more datagrams are already waiting, and
/// for at most [`GATHER_TIME`], it receives again before signing, so the new answers of
/// several receive calls share one batch signature; then it signs and sends the replies. It
/// never waits for datagrams that have not arrived, and gathers only while answers wait for a
/// signature: replies signed earlier go out at once.
async fn run_batched(
    mut worker: Worker,
    socket: UdpSocket,
    state: &quinn_udp::UdpSocketState,
    mut shutdown: watch::Receiver<bool>,
) {
    // A coalesced (GRO) buffer holds up to gro_segments datagrams of the same size.
    let slot = RECEIVE_BUFFER_LEN * state.gro_segments().max(1);
    let mut storage = vec![0u8; slot * quinn_udp::BATCH_SIZE];
    let mut buffers: Vec<IoSliceMut<'_>> = storage.chunks_mut(slot).map(IoSliceMut::new).collect();
    let mut meta = vec![RecvMeta::default(); buffers.len()];
    let mut slots: Vec<Slot> = Vec::new();
    let mut replies: Vec<Vec<u8>> = Vec::new();
    // Whether the last gathering found the worker under load (see LOADED_GATHER).
    let mut loaded = false;
    loop {
        tokio::select! {
            ready = socket.readable() => if let Err(e) = ready {
                tracing::warn!("udp socket: {e}");
                break;
            },
            _ = shutdown.changed() => break,
        }
        let started = Instant::now();
        let mut taken = 0;
        loop {
            let count =
                match socket.try_io(Interest::READABLE, || state.recv((&socket).into(), &mut buffers, &mut meta)) {
                    Ok(count) => count,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        // Under load, more queries are on their way: wait for them, within the
                        // time bound, so their answers share the signature. An idle worker's
                        // lone query never waits.
                        let waiting = worker.waiting();
                        let left = GATHER_TIME.saturating_sub(started.elapsed());
                        if !loaded || waiting == 0 || waiting >= GATHER_ANSWERS || left.is_zero() {
                            break;
                        }
                        match tokio::time::timeout(left, socket.readable()).await {
                            Ok(Ok(())) => continue,
                            _ => break,
                        }
                    }
                    Err(e) => {
                        // ICMP errors from earlier sends surface here on some systems; keep serving.
                        tracing::debug!("udp receive: {e}");
                        break;
                    }
                };
            let now = SystemTime::now();
            for (buffer, meta) in buffers.iter().zip(&meta).take(count) {
                let stride = if meta.stride == 0 { meta.len } else { meta.stride };
                for datagram in buffer[..meta.len].chunks(stride.max(1)) {
                    if taken == replies.len() {
                        replies.push(Vec::new());
                        slots.push(Slot { to: meta.addr, received: 0 });
                    }
                    slots[taken].to = meta.addr;
                    slots[taken].received = datagram.len();
                    worker.take(taken, datagram, meta.addr.ip(), now, &mut replies[taken]);
                    taken += 1;
                }
            }
            // Replies that need no signature (answers signed earlier, challenges) go out at once.
            let waiting = worker.waiting();
            if waiting == 0
                || waiting >= GATHER_ANSWERS
                || taken >= GATHER_DATAGRAMS
                || started.elapsed() >= GATHER_TIME
            {
                break;
            }
        }
        loaded = taken >= LOADED_GATHER;
        worker.sign_waiting(&mut replies[..taken]);
        for (slot, reply) in slots.iter().zip(&replies).take(taken) {
            log_query(slot.received, slot.to, reply);
        }
        send_all(&socket, &slots[..taken], &replies[..taken]).await;
        let sent = replies[..taken].iter().filter(|reply| !reply.is_empty()).count();
        worker.metrics().observe_latencies(started.elapsed(), sent as u64);
        if *shutdown.borrow() {
            break;
        }
    }
}

/// One debug event per datagram: where from, its size, and the reply's kind and size.
fn log_query(received: usize, from: SocketAddr, reply: &[u8]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let reply_kind = match upgram_core::wire::Frame::decode(reply) {
        _ if reply.is_empty() => "none".to_owned(),
        Ok(frame) => format!("{:?}", frame.kind),
        Err(_) => "undecodable".to_owned(),
    };
    tracing::debug!(%from, bytes = received, reply = %reply_kind, reply_bytes = reply.len(), "query");
}

/// Sends the non-empty replies among `replies` to their slots' addresses: with one system
/// call per batch (`sendmmsg`) on Linux, one per datagram elsewhere. Waits for room in the
/// socket buffer only when it is full.
async fn send_all(socket: &UdpSocket, slots: &[Slot], replies: &[Vec<u8>]) {
    #[cfg(target_os = "linux")]
    {
        let mut next = 0;
        while next < replies.len() {
            match socket.try_io(Interest::WRITABLE, || sendmmsg(socket, &slots[next..], &replies[next..])) {
                Ok(sent) => next += sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = socket.writable().await {
                        tracing::debug!("udp send: {e}");
                        return;
                    }
                }
                Err(e) => {
                    // The first datagram left could not be sent (its destination is
                    // unreachable, say): skip it, keep sending the others.
                    tracing::debug!("udp send to {}: {e}", slots[next].to);
                    next += 1;
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    for (slot, reply) in slots.iter().zip(replies) {
        if !reply.is_empty() {
            send(socket, reply, slot.to).await;
        }
    }
}

/// One `sendmmsg` call for the replies, in order, from the first; returns how many of them it
/// accounted for (sent, or empty and skipped), at least one unless it fails.
#[cfg(target_os = "linux")]
fn sendmmsg(socket: &UdpSocket, slots: &[Slot], replies: &[Vec<u8>]) -> io::Result<usize> {
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
    // Leading empty replies (queries that get none) need no system call.
    let skipped = replies.iter().take_while(|reply| reply.is_empty()).count();
    let (slots, replies) = (&slots[skipped..], &replies[skipped..]);
    // The run of non-empty replies that follows, at most as many as one call takes.
    let run = replies.iter().take(SEND_BATCH).take_while(|reply| !reply.is_empty()).count();
    if run == 0 {
        return Ok(skipped);
    }
    let addresses: Vec<SocketAddrAny> = slots[..run].iter().map(|slot| SocketAddrAny::from(slot.to)).collect();
    let buffers: Vec<[io::IoSlice<'_>; 1]> = replies[..run].iter().map(|reply| [io::IoSlice::new(reply)]).collect();
    let mut controls: Vec<SendAncillaryBuffer<'_, '_, '_>> = (0..run).map(|_| SendAncillaryBuffer::default()).collect();
    let mut messages: Vec<MMsgHdr<'_>> = addresses
        .iter()
        .zip(&buffers)
        .zip(controls.iter_mut())
        .map(|((address, buffer), control)| MMsgHdr::new_with_addr(address, buffer, control))
        .collect();
    let sent = rustix::net::sendmmsg(socket, &mut messages, SendFlags::empty())?;
    Ok(skipped + sent)
}

/// Sends without a wakeup when the socket buffer has room, which is nearly always.
async fn send(socket: &UdpSocket, reply: &[u8], to: SocketAddr) {
    let sent = match socket.try_send_to(reply, to) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.send_to(reply, to).await,
        other => other,
    };
    if let Err(e) = sent {
        tracing::debug!("udp send to {to}: {e}");
    }
}

/// One datagram per system call, for sockets the batched path cannot use.
async fn run_single(mut worker: Worker, socket: UdpSocket, mut shutdown: watch::Receiver<bool>) {
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
                tracing::debug!("udp receive: {e}");
                continue;
            }
        };
        let started = Instant::now();
        let replied = worker.handle(&buffer[..len], from.ip(), SystemTime::now(), &mut reply);
        log_query(len, from, if replied { &reply } else { &[] });
        if replied {
            send(&socket, &reply, from).await;
            worker.metrics().observe_latency(started.elapsed());
        }
        if *shutdown.borrow() {
            break;
        }
    }
}
